"""GPT-2 (PyTorch) against transformers 4.57: logits, padding, KV-cache decoding, hidden states, attentions."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


@pytest.fixture(scope="module")
def pair(families):
    return families["gpt2"].hf_pair(seed=0)


@pytest.fixture(scope="module")
def eager_pair(families):
    return families["gpt2"].hf_pair(seed=0, attn="eager")


@torch.no_grad()
def test_parameter_names_and_conv1d_layout(pair):
    hf, ours = pair
    assert list(ours.state_dict()) == list(hf.state_dict())
    for name, tensor in hf.state_dict().items():
        assert ours.state_dict()[name].shape == tensor.shape, name
    assert ours.transformer.h[0].attn.c_attn.weight.shape == (64, 192)  # Conv1D: [in, out]
    assert ours.lm_head.weight is ours.transformer.wte.weight


@torch.no_grad()
def test_plain_batch_logits(pair, gen):
    hf, ours = pair
    ids = torch.randint(0, 1000, (3, 9), generator=gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("with_positions", [False, True])
@torch.no_grad()
def test_left_padded_batch_logits(pair, gen, checks, with_positions):
    hf, ours = pair
    ids, mask = checks.left_padded_batch(gen)
    kwargs = {"attention_mask": mask}
    if with_positions:
        kwargs["position_ids"] = checks.positions_from_mask(mask)
    out = ours(ids, **kwargs).logits
    assert torch.isfinite(out).all(), "padded rows must stay finite (diagonal always attended)"
    checks.assert_close_on_mask(out, hf(ids, **kwargs).logits, mask)


@pytest.mark.parametrize("cache", ["preallocated", "auto", "legacy"])
def test_incremental_decoding_matches_full_forward(pair, gen, checks, cache):
    checks.incremental(*pair, gen, cache)


@torch.no_grad()
def test_hidden_states_and_attentions(eager_pair, gen, checks):
    hf, ours = eager_pair
    ids, mask = checks.left_padded_batch(gen, pads=(0, 3), length=7)
    kwargs = dict(attention_mask=mask, output_hidden_states=True, output_attentions=True)
    theirs, mine = hf(ids, **kwargs), ours(ids, **kwargs)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == 3
    for a, b in zip(mine.hidden_states, theirs.hidden_states):
        checks.assert_close_on_mask(a, b, mask)
    assert len(mine.attentions) == 2
    for a, b in zip(mine.attentions, theirs.attentions):
        assert a.shape == b.shape == (2, 4, 7, 7)
        checks.assert_close_on_mask(a.transpose(1, 2), b.transpose(1, 2), mask)  # real query rows


@torch.no_grad()
def test_sdpa_and_eager_paths_agree(pair, gen):
    _, ours = pair
    ids = torch.randint(0, 1000, (2, 6), generator=gen)
    sdpa = ours(ids).logits
    eager = ours(ids, output_attentions=True).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1.3e-6)


@torch.no_grad()
def test_logits_to_keep_labels_and_tuple_output(pair, gen):
    hf, ours = pair
    ids = torch.randint(0, 1000, (2, 6), generator=gen)
    torch.testing.assert_close(ours(ids, logits_to_keep=2).logits, hf(ids, logits_to_keep=2).logits)
    torch.testing.assert_close(ours(ids, labels=ids).loss, hf(ids, labels=ids).loss)
    out = ours(ids, return_dict=False, use_cache=True)
    assert isinstance(out, tuple) and out[0].shape == (2, 6, 1000)
    assert out[1].get_seq_length() == 6


@torch.no_grad()
def test_base_model_output(families, gen):
    fam = families["gpt2"]
    torch.manual_seed(0)
    hf = fam.hf_base(fam.hf_config(**fam.kwargs)).eval()
    ours = fam.base(fam.config(**fam.kwargs)).eval()
    ours.load_state_dict(hf.state_dict())
    ids = torch.randint(0, 1000, (2, 5), generator=gen)
    out = ours(ids, use_cache=False)
    assert out.past_key_values is None
    torch.testing.assert_close(out.last_hidden_state, hf(ids).last_hidden_state, atol=1e-5, rtol=1.3e-6)


@torch.no_grad()
def test_scale_attn_by_inverse_layer_idx_matches_eager(families, gen):
    """transformers' SDPA path ignores this flag; its eager path (the reference semantics) applies it."""
    fam = families["gpt2"]
    kwargs = dict(fam.kwargs, scale_attn_by_inverse_layer_idx=True)
    torch.manual_seed(0)
    hf = fam.hf_lm(fam.hf_config(**kwargs, attn_implementation="eager")).eval()
    ours = fam.lm(fam.config(**kwargs)).eval()
    ours.load_state_dict(hf.state_dict())
    ids = torch.randint(0, 1000, (2, 6), generator=gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


def test_engine_contract(pair):
    _, ours = pair
    assert (ours.num_layers, ours.num_kv_heads, ours.head_dim) == (2, 4, 16)
    cache = ours.new_cache(batch_size=3, max_length=11)
    assert len(cache) == 2 and cache.keys[0].shape == (3, 4, 11, 16)
    assert cache.keys[0].dtype == ours.dtype and cache.get_seq_length() == 0


def test_config_defaults_match_transformers():
    from pyengine.models.gpt2 import GPT2Config

    ours, theirs = GPT2Config().to_dict(), transformers.GPT2Config().to_dict()
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
                "scale_attn_weights", "use_cache", "bos_token_id", "eos_token_id",
                "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "tie_word_embeddings"):  # fmt: skip
        assert ours[key] == theirs[key], key
    assert GPT2Config(n_embd=32).hidden_size == 32
