"""TF GPT-2 against our PyTorch GPT-2 (same weights) and transformers 4.57's TF GPT-2 (same files).

Greedy / beam tokens equal PyTorch's, eager and compiled (XLA); logits within 1e-4; tf_model.h5 written
by either library loads in the other; the SavedModel's serving signature runs from tf.saved_model.load.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.backends.tf import kernels, tf
from pyengine.models.gpt2.config import GPT2Config
from pyengine.models.gpt2.modeling_tf import TFGPT2LMHeadModel
from pyengine.models.gpt2.modeling_torch import GPT2LMHeadModel

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2,
           pad_token_id=0)  # fmt: skip
PROMPT = np.array([[0, 0, 5, 9, 13], [3, 4, 5, 6, 7]])
MASK = (np.arange(5)[None] >= np.array([[2], [0]])).astype(np.int32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(our torch model, our TF model loaded from its checkpoint with from_pt, checkpoint dir)."""
    torch.manual_seed(0)
    pt = GPT2LMHeadModel(GPT2Config(**CFG)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: varied, non-degenerate continuations
        for name, p in pt.named_parameters():
            if ".ln_" not in name and "ln_f" not in name:
                p.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("gpt2_pt")
    pt.save_pretrained(path)
    return pt, TFGPT2LMHeadModel.from_pretrained(path, from_pt=True), path


def _pt_generate(pt, **kwargs):
    with torch.no_grad():
        return pt.generate(torch.tensor(PROMPT), attention_mask=torch.tensor(MASK), **kwargs).numpy()


def test_logits_match_torch(pair):
    pt, tfm, _ = pair
    with torch.no_grad():
        expected = pt(torch.tensor(PROMPT), attention_mask=torch.tensor(MASK)).logits.numpy()
    got = tfm(tf.constant(PROMPT), attention_mask=tf.constant(MASK)).logits.numpy()
    np.testing.assert_allclose(got[MASK == 1], expected[MASK == 1], atol=1e-4)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=10),
    dict(max_new_tokens=9, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4, bad_words_ids=[[7], [5, 9]]),
], ids=["plain", "processors"])  # fmt: skip
def test_greedy_tokens_match_torch(pair, jit, kwargs):
    pt, tfm, _ = pair
    expected = _pt_generate(pt, do_sample=False, **kwargs)
    got = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), jit_compile=jit, **kwargs)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert len(set(expected[1, 5:].tolist())) > 2, "degenerate continuation: the test would prove little"


def test_xla_batch_one_takes_the_layers_weights_as_they_are(pair, linear_calls, monkeypatch):
    """At batch 1 under XLA every product of a decode step is the C++ call over the `[in, out]` Conv1D weights
    (and the `[V, E]` table for the head: the full product in prefill, the screened top logits in the step), no
    copies, and attention is the C++ kernel over the cache; tokens stay equal to PyTorch's."""
    pt, tfm, _ = pair
    prompt = PROMPT[1:]
    screened, attended = [], []
    real, real_attend = kernels.top_logits, kernels.attend_cached
    monkeypatch.setattr(kernels, "top_logits", lambda x, screen, w, k: screened.append(x.shape[0]) or real(x, screen, w, k))
    monkeypatch.setattr(kernels, "attend_cached", lambda *a: attended.append(real_attend(*a) is not None) or real_attend(*a))
    tfm.__dict__.pop("_pyengine_compiled", None)
    with torch.no_grad():
        expected = pt.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False).numpy()
    got = tfm.generate(tf.constant(prompt), max_new_tokens=8, jit_compile=True).numpy()
    np.testing.assert_array_equal(got, expected)
    if kernels.linear_impl().label == "cpp":
        # traced once: the step's 4 Conv1D products a block, and the head over one row in prefill
        calls = linear_calls
        assert calls.count((1, True)) == 4 * tfm.config.n_layer and calls.count((1, False)) == 1, calls
        assert screened == [1]  # traced once, over the step's one row
        assert attended == [True] * tfm.config.n_layer  # the step's attention reads the cache in the C++ kernel


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_k=5, temperature=0.7),
                                    dict(do_sample=True, top_k=8, top_p=0.8, min_new_tokens=9)])  # fmt: skip
def test_xla_screened_head_keeps_the_tokens(pair, screened_and_full, kwargs):
    """Greedy and top-k sampling under XLA read the head's int8 screen in decode steps; the tokens equal those
    of the full head, draw for draw (top_k is a traced value: the screen's width follows it)."""
    screened, full = screened_and_full(pair[1], PROMPT, MASK, max_new_tokens=10, seed=4, **kwargs)
    np.testing.assert_array_equal(screened, full)


def test_xla_batches_past_the_screen_limit_build_no_screen(pair, monkeypatch):
    """Past TOP_LOGITS_MAX_ROWS rows the head's product is compute-bound: no screen is built for it."""
    _, tfm, _ = pair
    built = []
    real = kernels.top_logits_screen
    monkeypatch.setattr(kernels, "top_logits_screen", lambda w: built.append(w.shape) or real(w))
    for rows, expected in ((kernels.TOP_LOGITS_MAX_ROWS + 1, 0), (2, 1)):
        tfm.__dict__.pop("_pyengine_compiled", None)
        built.clear()
        tfm.generate(tf.constant(np.tile(PROMPT[1:], (rows, 1))), max_new_tokens=3, jit_compile=True)
        assert len(built) == expected


def test_beam_tokens_match_torch(pair):
    pt, tfm, _ = pair
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=6, length_penalty=0.8)
    expected = _pt_generate(pt, **kwargs)
    got = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), **kwargs)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_xla_prompt_buckets_and_traced_values_share_one_compilation(pair):
    """Prompts of length 3..5 share the length-8 bucket; new temperature / top_p values reuse the trace."""
    _, tfm, _ = pair
    tfm.__dict__.pop("_pyengine_compiled", None)
    outs = []
    for temperature, top_p, length in ((0.7, 0.9, 5), (1.3, 0.8, 4), (0.9, 0.95, 3)):
        outs.append(tfm.generate(tf.constant(PROMPT[1:, -length:]), do_sample=True, temperature=temperature,
                                 top_p=top_p, top_k=20, max_new_tokens=6, min_new_tokens=6, seed=3))  # fmt: skip
    compiled = tfm.__dict__["_pyengine_compiled"]
    assert len(compiled) == 1  # same bucket (8) and same max_new_tokens: one compiled function ...
    (fn,) = compiled.values()
    assert fn.experimental_get_tracing_count() == 1  # ... traced once
    assert [o.shape[1] for o in outs] == [11, 10, 9]  # bucket padding removed from the result
    np.testing.assert_array_equal(outs[0].numpy()[:, :5], PROMPT[1:])


def test_xla_turning_warpers_on_reuses_the_compilation(pair):
    """Defaults (no temperature / top-p) and set values share one compiled loop; its neutral warper values
    give the eager loop's tokens."""
    _, tfm, _ = pair
    tfm.__dict__.pop("_pyengine_compiled", None)
    kw = dict(do_sample=True, max_new_tokens=6, min_new_tokens=6, seed=5)
    ids = tf.constant(PROMPT[1:])
    default = tfm.generate(ids, **kw)
    tfm.generate(ids, temperature=0.6, top_p=0.85, top_k=0, **kw)
    (fn,) = tfm.__dict__["_pyengine_compiled"].values()
    assert fn.experimental_get_tracing_count() == 1
    assert default.shape[1] == PROMPT.shape[1] + 6


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_seeded_sampling_is_reproducible(pair, jit):
    _, tfm, _ = pair
    kwargs = dict(attention_mask=tf.constant(MASK), do_sample=True, top_k=0, max_new_tokens=8, jit_compile=jit)
    a = tfm.generate(tf.constant(PROMPT), seed=11, **kwargs).numpy()
    b = tfm.generate(tf.constant(PROMPT), seed=11, **kwargs).numpy()
    c = tfm.generate(tf.constant(PROMPT), seed=12, **kwargs).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or (a != c).any()


def test_h5_round_trip_with_transformers(pair, tmp_path):
    _, tfm, _ = pair
    tfm.save_pretrained(tmp_path / "ours")
    theirs = transformers.TFGPT2LMHeadModel.from_pretrained(tmp_path / "ours")
    expected = tfm(tf.constant(PROMPT), attention_mask=tf.constant(MASK)).logits.numpy()
    got = theirs(tf.constant(PROMPT), attention_mask=tf.constant(MASK)).logits.numpy()
    np.testing.assert_allclose(got[MASK == 1], expected[MASK == 1], atol=1e-4)
    theirs.save_pretrained(tmp_path / "theirs")
    back, info = TFGPT2LMHeadModel.from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    for (name, a), (_, b) in zip(tfm.tf_weights(), back.tf_weights()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_from_pt_reads_transformers_checkpoint(pair, tmp_path):
    pt, _, path = pair
    hf = transformers.GPT2LMHeadModel.from_pretrained(path)
    hf.save_pretrained(tmp_path, safe_serialization=False)  # pytorch_model.bin, transformers' writer
    model = TFGPT2LMHeadModel.from_pretrained(tmp_path, from_pt=True)
    with torch.no_grad():
        expected = pt(torch.tensor(PROMPT[1:])).logits.numpy()
    np.testing.assert_allclose(model(tf.constant(PROMPT[1:])).logits.numpy(), expected, atol=1e-4)


def test_saved_model_serving_signature(pair, tmp_path):
    _, tfm, _ = pair
    tfm.save_pretrained(tmp_path, saved_model=True, version=3)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model" / "3"))
    out = loaded.signatures["serving_default"](input_ids=tf.constant(PROMPT, tf.int32),
                                               attention_mask=tf.constant(MASK, tf.int32))  # fmt: skip
    expected = tfm(tf.constant(PROMPT), attention_mask=tf.constant(MASK)).logits.numpy()
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)


def test_bad_input_errors(pair, tmp_path):
    _, tfm, path = pair
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        tfm.generate(tf.constant([[1, 500]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"shape \[batch, length\]"):
        tfm.generate(tf.constant([1, 2]), max_new_tokens=2)
    with pytest.raises(ValueError, match="not used by the model"):
        tfm.generate(tf.constant([[1, 2]]), max_new_tokens=2, bogus_flag=True)
    with pytest.raises(OSError, match="from_pt=True"):
        TFGPT2LMHeadModel.from_pretrained(path)  # PyTorch weights only
    with pytest.raises(ValueError, match="position table"):
        tfm.generate(tf.constant([[1, 2]]), max_new_tokens=100)


def test_group_beam_matches_torch_and_beam_sample_is_seeded(pair):
    pt, tfm, _ = pair
    kwargs = dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2, max_new_tokens=5)
    expected = _pt_generate(pt, **kwargs)
    got = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), **kwargs)
    np.testing.assert_array_equal(got.numpy(), expected)
    sample = dict(attention_mask=tf.constant(MASK), num_beams=3, do_sample=True, max_new_tokens=5, seed=4)
    np.testing.assert_array_equal(tfm.generate(tf.constant(PROMPT), **sample).numpy(),
                                  tfm.generate(tf.constant(PROMPT), **sample).numpy())  # fmt: skip


def test_output_scores_compiled_equal_eager(pair):
    """return_dict_in_generate + output_scores: the XLA loop's per-step scores equal the eager loop's."""
    _, tfm, _ = pair
    kwargs = dict(attention_mask=tf.constant(MASK), max_new_tokens=5, return_dict_in_generate=True, output_scores=True,
                  repetition_penalty=1.2)  # fmt: skip
    eager = tfm.generate(tf.constant(PROMPT), jit_compile=False, **kwargs)
    xla = tfm.generate(tf.constant(PROMPT), jit_compile=True, **kwargs)
    np.testing.assert_array_equal(xla.sequences.numpy(), eager.sequences.numpy())
    assert len(xla.scores) == len(eager.scores) == eager.sequences.shape[1] - PROMPT.shape[1]
    for a, b in zip(xla.scores, eager.scores):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_generate_wrapped_in_users_xla_function(pair):
    """transformers' documented XLA pattern: `tf.function(model.generate, jit_compile=True)`."""
    _, tfm, _ = pair
    xla_generate = tf.function(tfm.generate, jit_compile=True)
    out = xla_generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), max_new_tokens=6).numpy()
    eager = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), max_new_tokens=6, jit_compile=False)
    eager = eager.numpy()
    assert out.shape == (2, 11)
    np.testing.assert_array_equal(out[:, : eager.shape[1]], eager)
    assert (out[:, eager.shape[1]:] == 0).all()  # rows that ended early are padded to max_length
