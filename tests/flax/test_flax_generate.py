"""Flax generate(): sampling reproducibility, no recompilation for new sampling values, the reference
document's example, output shapes, and clear errors on bad input. Tiny random GPT-2 (local folder)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pyengine.models.gpt2.config import GPT2Config

IDS = np.array([[0, 5, 6, 7], [9, 10, 11, 12]])
MASK = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from pyengine.models.gpt2.modeling_flax import FlaxGPT2LMHeadModel

    path = tmp_path_factory.mktemp("flax_gpt2_gen")
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=48, initializer_range=0.5,
                        bos_token_id=63, eos_token_id=63)  # fmt: skip
    FlaxGPT2LMHeadModel(config, seed=1).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def model(folder):
    from pyengine import FlaxAutoModelForCausalLM

    return FlaxAutoModelForCausalLM.from_pretrained(folder)


def _sample(model, key, trace=True, **kw):
    args = dict(attention_mask=MASK, do_sample=True, max_new_tokens=8, pad_token_id=0, top_k=20, temperature=0.9)
    args.update(kw)
    return np.asarray(model.generate(IDS, prng_key=jax.random.PRNGKey(key), trace=trace, **args).sequences)


def test_sampling_is_reproducible_for_a_prng_key(model):
    first = _sample(model, 3)
    np.testing.assert_array_equal(_sample(model, 3), first)
    np.testing.assert_array_equal(_sample(model, 3, trace=False), first)  # the eager loop draws the same way
    others = [_sample(model, k) for k in (4, 5)]
    assert any(not np.array_equal(o, first) for o in others)
    np.testing.assert_array_equal(first[:, :4], IDS)


def test_new_sampling_values_do_not_recompile(model):
    kw = dict(top_p=0.9, repetition_penalty=1.2, min_new_tokens=3)
    _sample(model, 0, **kw)
    before = model._generate_compilations
    outs = [_sample(model, 0, temperature=t, top_p=p, top_k=k, repetition_penalty=r, min_new_tokens=m)
            for t, p, k, r, m in [(0.7, 0.8, 10, 1.3, 2), (1.3, 0.95, 30, 1.1, 5), (0.5, 0.5, 5, 2.0, 1)]]
    assert model._generate_compilations == before  # values changed, the compiled function did not
    assert len({o.tobytes() for o in outs}) > 1  # and the values do take effect
    _sample(model, 0, no_repeat_ngram_size=2)  # a new structure compiles once
    assert model._generate_compilations == before + 1


def test_turning_warpers_on_does_not_recompile(model):
    """From the defaults (no temperature, top-p) to set values: the compiled loop always holds every warper,
    at neutral values when unset, and those give the eager loop's tokens (which has no such warpers)."""
    default = _sample(model, 7)
    np.testing.assert_array_equal(_sample(model, 7, trace=False), default)
    before = model._generate_compilations
    warped = _sample(model, 7, temperature=0.7, top_p=0.9, top_k=0)
    assert model._generate_compilations == before
    np.testing.assert_array_equal(_sample(model, 7, temperature=0.7, top_p=0.9, top_k=0, trace=False), warped)


def test_output_scores_and_max_length_padding(model):
    out = model.generate(IDS, attention_mask=MASK, max_new_tokens=5, pad_token_id=0, return_dict_in_generate=True,
                         output_scores=True)  # fmt: skip
    assert out.sequences.shape == (2, 9) and out.scores.shape == (2, 5, 64)
    np.testing.assert_array_equal(np.argmax(np.asarray(out.scores), -1), np.asarray(out.sequences)[:, 4:])
    eos = model.generate(IDS, attention_mask=MASK, max_new_tokens=6, pad_token_id=0, eos_token_id=[int(i) for i in range(64)])
    np.testing.assert_array_equal(np.asarray(eos.sequences)[:, 5:], 0)  # finished after one token, then pad


def test_reference_flax_generate_example_runs(folder):
    """The FlaxGenerationMixin example of the reference document, with a tiny local checkpoint."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from pyengine import FlaxAutoModelForCausalLM

    words = ["The", "dog", "cat", "runs", "fast", "and", "barks"] + [f"w{i}" for i in range(56)] + ["<|endoftext|>"]
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(folder)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = FlaxAutoModelForCausalLM.from_pretrained(folder)
    input_context = "The dog"
    input_ids = tokenizer(input_context, return_tensors="jax").input_ids
    outputs = model.generate(input_ids=input_ids, max_length=20, top_k=30, do_sample=True)
    decoded = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    assert len(decoded) == 1 and decoded[0].startswith("The dog")
    assert outputs.sequences.shape == (1, 20)


def test_bad_input_gives_clear_errors(model):
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        model.generate(np.array([[1, 99]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"shape \[batch, length\]"):
        model.generate(np.array([1, 2, 3]), max_new_tokens=2)
    with pytest.raises(TypeError, match="integer token ids"):
        model.generate(np.array([[1.0, 2.0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="not used by the model"):
        model.generate(IDS, max_new_tokens=2, do_smaple=True)
    with pytest.raises(ValueError, match="n_positions"):
        model.generate(IDS, max_new_tokens=100)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(IDS, max_new_tokens=2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="trace=False"):
        model.generate(IDS, max_new_tokens=2, logits_processor=[lambda ids, scores: scores])
    ok = model.generate(IDS, max_new_tokens=2, trace=False, logits_processor=[lambda ids, scores: scores])
    assert ok.sequences.shape == (2, 6)
    with pytest.raises(OSError, match="from_pt=True"):
        import tempfile

        from pyengine.models.gpt2.modeling_flax import FlaxGPT2LMHeadModel
        from pyengine.models.gpt2.modeling_torch import GPT2LMHeadModel

        with tempfile.TemporaryDirectory() as d:
            GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=8)).save_pretrained(d)
            FlaxGPT2LMHeadModel.from_pretrained(d)


@pytest.mark.parametrize("kw", [dict(do_sample=False), dict(top_k=5, temperature=0.7), dict(top_k=9, top_p=0.8)])
def test_compiled_decode_steps_screen_the_head_and_keep_the_tokens(model, monkeypatch, kw):
    """trace=True: greedy and top-k decode steps read the tied head's int8 screen (`kernels.top_logits` gets it);
    the tokens equal the full head's, draw for draw."""
    from pyengine.backends.jax import kernels

    if kernels.linear_impl().label != "cpp":
        pytest.skip("the C++ XLA targets are unavailable")
    screens = []
    real = kernels.top_logits
    monkeypatch.setattr(kernels, "top_logits", lambda x, s, w, k: screens.append(s is not None) or real(x, s, w, k))
    outs = []
    for screen in (True, False):
        if not screen:
            monkeypatch.setattr(kernels, "top_logits_screen", lambda w: None)
        model.__dict__.pop("_generate_fns", None)
        outs.append(_sample(model, 2, **kw))
        assert screens == [True] if screen else not screens  # traced once, with the screen; then never called
        screens.clear()
    np.testing.assert_array_equal(outs[0], outs[1])
