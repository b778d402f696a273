"""Flax models against our PyTorch models and transformers 4.57's Flax models, on tiny random checkpoints.

Same weights → logits within 1e-4 (relative to the logits' scale), greedy and beam tokens equal; checkpoint
files cross both ways: our flax_model.msgpack loads in transformers, theirs loads here, from_pt / from_flax
convert between frameworks; num_parameters and resize_token_embeddings agree with transformers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.checkpoints import flax_msgpack
from pyengine.models.bert.config import BertConfig
from pyengine.models.gpt2.config import GPT2Config
from pyengine.models.llama.config import LlamaConfig
from pyengine.models.t5.config import T5Config

transformers = pytest.importorskip("transformers")

IDS = np.array([[0, 0, 7, 8, 9, 21], [3, 4, 10, 11, 12, 5]])  # row 0 left-padded (pad id 0)
MASK = (IDS != 0).astype(np.int64)
MASK[1] = 1


def _families():
    from pyengine.models.bert.modeling_flax import FlaxBertModel
    from pyengine.models.bert.modeling_torch import BertModel
    from pyengine.models.gpt2.modeling_flax import FlaxGPT2LMHeadModel
    from pyengine.models.gpt2.modeling_torch import GPT2LMHeadModel
    from pyengine.models.llama.modeling_flax import FlaxLlamaForCausalLM
    from pyengine.models.llama.modeling_torch import LlamaForCausalLM
    from pyengine.models.t5.modeling_flax import FlaxT5ForConditionalGeneration
    from pyengine.models.t5.modeling_torch import T5ForConditionalGeneration

    return {
        "gpt2": (FlaxGPT2LMHeadModel, GPT2LMHeadModel, GPT2Config(
            n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=40, initializer_range=0.3,
            bos_token_id=63, eos_token_id=63), "FlaxGPT2LMHeadModel"),
        "llama": (FlaxLlamaForCausalLM, LlamaForCausalLM, LlamaConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
            vocab_size=64, initializer_range=0.3, bos_token_id=1, eos_token_id=2), "FlaxLlamaForCausalLM"),
        "t5": (FlaxT5ForConditionalGeneration, T5ForConditionalGeneration, T5Config(
            num_layers=2, num_decoder_layers=2, d_model=32, d_kv=8, num_heads=4, d_ff=48, vocab_size=64,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, eos_token_id=1,
            pad_token_id=0, initializer_factor=1.5), "FlaxT5ForConditionalGeneration"),
        "bert": (FlaxBertModel, BertModel, BertConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48, vocab_size=64),
            "FlaxBertModel"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Per family: our Flax model (random), its folder, and our PyTorch model loaded from it with from_flax."""
    out = {}
    for name, (flax_cls, pt_cls, config, _) in _families().items():
        folder = tmp_path_factory.mktemp(f"flax_{name}")
        model = flax_cls(config, seed=0)
        model.save_pretrained(folder)
        out[name] = (model, str(folder), pt_cls.from_pretrained(folder, from_flax=True))
    return out


def _outputs(name: str, model, pt, **kw):
    if name == "t5":
        dec = np.array([[0, 4, 5], [0, 7, 8]])
        f = model(IDS, attention_mask=MASK, decoder_input_ids=dec, **kw).logits
        p = pt(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), decoder_input_ids=torch.tensor(dec)).logits
        return np.asarray(f), p.detach().numpy(), np.ones(f.shape[:2], bool)
    if name == "bert":
        f = model(IDS, attention_mask=MASK, **kw).last_hidden_state
        p = pt(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state
        return np.asarray(f), p.detach().numpy(), MASK.astype(bool)
    f = model(IDS, attention_mask=MASK, **kw).logits
    p = pt(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits
    return np.asarray(f), p.detach().numpy(), MASK.astype(bool)


def _assert_close(a, b, where):
    scale = max(1.0, float(np.abs(b[where]).max()))
    assert np.abs(a[where] - b[where]).max() <= 1e-4 * scale


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "bert"])
def test_logits_match_pytorch_on_the_same_weights(saved, name):
    model, _, pt = saved[name]
    _assert_close(*_outputs(name, model, pt))


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "bert"])
def test_from_pt_loads_pytorch_weights(saved, tmp_path, name):
    flax_cls = _families()[name][0]
    model, _, pt = saved[name]
    pt.save_pretrained(tmp_path)
    loaded = flax_cls.from_pretrained(tmp_path, from_pt=True)
    a, b, where = _outputs(name, loaded, pt)
    _assert_close(a, b, where)
    assert loaded.num_parameters() == model.num_parameters()


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "bert"])
def test_msgpack_round_trips_with_transformers(saved, tmp_path, name):
    model, folder, _ = saved[name]
    hf_cls = getattr(transformers, _families()[name][3])
    hf = hf_cls.from_pretrained(folder)  # our file in transformers
    a = _outputs(name, model, saved[name][2])[0]
    b = _outputs(name, hf, saved[name][2])[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))
    hf.save_pretrained(tmp_path)  # their file here, byte for byte as we would write it
    theirs = (tmp_path / "flax_model.msgpack").read_bytes()
    arrays = flax_msgpack.load_flax_msgpack(tmp_path / "flax_model.msgpack")
    assert flax_msgpack.dumps(arrays) == theirs
    ours = type(model).from_pretrained(tmp_path)
    np.testing.assert_array_equal(_outputs(name, ours, saved[name][2])[0], a)
    assert sum(np.prod(v.shape) for v in arrays.values()) == model.num_parameters()


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_greedy_and_beam_tokens_match_pytorch(saved, name):
    model, _, pt = saved[name]
    kw = dict(attention_mask=MASK, max_new_tokens=7, pad_token_id=0)
    greedy = pt.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=7, pad_token_id=0)
    out = np.asarray(model.generate(IDS, **kw).sequences)
    np.testing.assert_array_equal(out[:, : greedy.shape[1]], greedy.numpy())
    eager = np.asarray(model.generate(IDS, trace=False, **kw).sequences)
    np.testing.assert_array_equal(eager, out)
    beam = pt.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=7, pad_token_id=0,
                       num_beams=3, num_return_sequences=2, length_penalty=0.8)
    ours = model.generate(IDS, num_beams=3, num_return_sequences=2, length_penalty=0.8, **kw)
    np.testing.assert_array_equal(np.asarray(ours.sequences)[:, : beam.shape[1]], beam.numpy())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_processors_match_pytorch_compiled_and_eager(saved, name):
    model, _, pt = saved[name]
    kw = dict(max_new_tokens=9, pad_token_id=0, repetition_penalty=1.5, no_repeat_ngram_size=2,
              bad_words_ids=[[5], [7, 8]], min_new_tokens=4, forced_eos_token_id=3)  # fmt: skip
    ref = pt.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), **kw).numpy()
    for trace in (True, False):
        out = np.asarray(model.generate(IDS, attention_mask=MASK, trace=trace, **kw).sequences)
        np.testing.assert_array_equal(out[:, : ref.shape[1]], ref)


def test_llama_matches_transformers_flax_generate(saved):
    model, folder, _ = saved["llama"]
    hf = transformers.FlaxLlamaForCausalLM.from_pretrained(folder)
    ids = IDS[1:]
    theirs = np.asarray(hf.generate(ids, max_new_tokens=6, pad_token_id=0).sequences)
    np.testing.assert_array_equal(np.asarray(model.generate(ids, max_new_tokens=6, pad_token_id=0).sequences), theirs)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_num_parameters_and_resize_against_transformers(saved, tmp_path, name):
    model, folder, pt = saved[name]
    hf_pt = getattr(transformers, _families()[name][3][4:]).from_pretrained(folder, from_flax=True) if name == "bert" else None
    assert model.num_parameters() == pt.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == pt.num_parameters(exclude_embeddings=True)
    if hf_pt is not None:
        assert model.num_parameters() == hf_pt.num_parameters()
    old = np.asarray(model.get_input_embeddings())
    flax_cls = _families()[name][0]
    resized = flax_cls.from_pretrained(folder)
    resized.resize_token_embeddings(70)
    pt2 = type(pt).from_pretrained(folder, from_flax=True)
    pt2.resize_token_embeddings(70)
    assert resized.config.vocab_size == 70
    assert resized.num_parameters() == pt2.num_parameters()
    table = np.asarray(resized.get_input_embeddings())
    assert table.shape == (70, old.shape[1])
    np.testing.assert_array_equal(table[:64], old)
    resized.save_pretrained(tmp_path)
    again = flax_cls.from_pretrained(tmp_path)  # the resized checkpoint reloads with the new vocabulary
    np.testing.assert_array_equal(np.asarray(again.get_input_embeddings()), table)
    shrunk = resized.resize_token_embeddings(50)
    assert flax_msgpack.flatten(shrunk) and resized.num_parameters() < pt2.num_parameters()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_cached_decode_steps_match_pytorch_logits(saved, name):
    """Prefill three tokens into a cache from `init_cache`, then feed one token per step (the decode shapes:
    two rows, one position): every step's logits equal the PyTorch forward's within 1e-4."""
    model, _, pt = saved[name]
    positions = np.where(MASK == 0, 1, np.cumsum(MASK, axis=-1) - 1)
    ref = pt(torch.tensor(IDS), attention_mask=torch.tensor(MASK), position_ids=torch.tensor(positions)).logits
    ref = ref.detach().numpy()
    cache = model.init_cache(IDS.shape[0], IDS.shape[1])
    out = model(IDS[:, :3], attention_mask=MASK, position_ids=positions[:, :3], past_key_values=cache)
    steps = [np.asarray(out.logits)]
    for t in range(3, IDS.shape[1]):
        out = model(IDS[:, t : t + 1], attention_mask=MASK, position_ids=positions[:, t : t + 1],
                    past_key_values=out.past_key_values)  # fmt: skip
        steps.append(np.asarray(out.logits))
    _assert_close(np.concatenate(steps, axis=1), ref, MASK.astype(bool))


def test_llama_decode_params_hold_the_fused_transposed_weights(saved):
    """Batch > 1 on the C++ products: q/k/v and gate/up side by side as [out, in], the other kernels
    transposed; batch 1 keeps the parameters as they are (the tokens tests above run both)."""
    from pyengine.backends.jax import kernels

    model, _, _ = saved["llama"]
    if kernels.linear_impl().label != "cpp":
        pytest.skip("the C++ products are not in use here")
    params = model.params
    assert model._decode_params(params, 1) is params
    layer = model._decode_params(params, 2)["model"]["layers"]["0"]
    attn, mlp, cfg = layer["self_attn"], layer["mlp"], model.config
    q_out = cfg.num_attention_heads * cfg.head_dim
    kv_out = cfg.num_key_value_heads * cfg.head_dim
    assert attn["qkv_t"].shape == (q_out + 2 * kv_out, cfg.hidden_size)
    np.testing.assert_array_equal(np.asarray(attn["qkv_t"][:q_out]), np.asarray(attn["q_proj"]["kernel"]).T)
    assert mlp["gate_up_t"].shape == (2 * cfg.intermediate_size, cfg.hidden_size)
    np.testing.assert_array_equal(np.asarray(attn["o_proj"]["kernel_t"]), np.asarray(attn["o_proj"]["kernel"]).T)
