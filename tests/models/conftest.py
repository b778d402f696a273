"""Tiny random GPT-2 / LLaMA models, built by transformers 4.57 and copied into ours (same weights).

Sizes: 2 layers, hidden 64, 4 heads (LLaMA: 2 KV heads, GQA), vocab 1000; seeded. A `Family` bundles the
matching classes of both libraries so tests can be written once and run per family.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402
from pyengine.models.llama import LlamaConfig, LlamaForCausalLM, LlamaModel  # noqa: E402

VOCAB = 1000

GPT2_KWARGS = dict(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4)
LLAMA_KWARGS = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
)  # fmt: skip


@dataclasses.dataclass
class Family:
    """One model family in both libraries."""

    name: str
    kwargs: dict[str, Any]
    config: type
    lm: type
    base: type
    hf_config: type
    hf_lm: type
    hf_base: type
    layers_key: str  # config attribute holding the layer count

    def hf_pair(self, seed: int = 0, attn: str = "sdpa") -> tuple[Any, Any]:
        """(transformers LM, our LM) with identical random weights, both in eval mode."""
        torch.manual_seed(seed)
        hf = self.hf_lm(self.hf_config(**self.kwargs, attn_implementation=attn)).eval()
        ours = self.lm(self.config(**self.kwargs)).eval()
        ours.load_state_dict(hf.state_dict(), strict=True)
        ours.tie_weights()
        return hf, ours


FAMILIES = {
    "gpt2": Family("gpt2", GPT2_KWARGS, GPT2Config, GPT2LMHeadModel, GPT2Model,
                   transformers.GPT2Config, transformers.GPT2LMHeadModel, transformers.GPT2Model, "n_layer"),
    "llama": Family("llama", LLAMA_KWARGS, LlamaConfig, LlamaForCausalLM, LlamaModel,
                    transformers.LlamaConfig, transformers.LlamaForCausalLM, transformers.LlamaModel,
                    "num_hidden_layers"),
}  # fmt: skip


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> Family:
    return FAMILIES[request.param]


@pytest.fixture(scope="session")
def families() -> dict[str, Family]:
    return FAMILIES


def left_padded_batch(gen: torch.Generator, pads: tuple[int, ...] = (0, 2, 5), length: int = 8) -> tuple[Any, Any]:
    """`input_ids [B, length]` and `attention_mask [B, length]` with `pads[b]` pad tokens on the left of row b."""
    ids = torch.randint(1, VOCAB, (len(pads), length), generator=gen)
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        ids[row, :pad] = 0
        mask[row, :pad] = 0
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """What generate() passes: cumulative position of real tokens, 1 on padding."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def assert_close_on_mask(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor, atol: float = 1e-5) -> None:
    """Compare `[B, S, ...]` tensors at the real (mask == 1) positions only."""
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=atol, rtol=1.3e-6)


class Checks:
    """Parity checks against transformers, written once and run by each family's test file."""

    left_padded_batch = staticmethod(left_padded_batch)
    positions_from_mask = staticmethod(positions_from_mask)
    assert_close_on_mask = staticmethod(assert_close_on_mask)

    @staticmethod
    @torch.no_grad()
    def incremental(hf: Any, ours: Any, gen: torch.Generator, cache: str, steps: int = 3) -> None:
        """Prefill a left-padded prompt, then `steps` single tokens; each step equals transformers' full forward."""
        ids, mask = left_padded_batch(gen, pads=(0, 3), length=6)
        new = torch.randint(1, VOCAB, (ids.shape[0], steps), generator=gen)
        full_ids = torch.cat([ids, new], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
        full = hf(full_ids, attention_mask=full_mask, position_ids=positions_from_mask(full_mask)).logits

        past = ours.new_cache(ids.shape[0], full_ids.shape[1]) if cache == "preallocated" else None
        out = ours(ids, attention_mask=mask, position_ids=positions_from_mask(mask), past_key_values=past,
                   use_cache=True)  # fmt: skip
        assert_close_on_mask(out.logits, full[:, : ids.shape[1]], mask)
        past = out.past_key_values.to_legacy_cache() if cache == "legacy" else out.past_key_values
        for step in range(steps):
            length = ids.shape[1] + step + 1
            step_mask = full_mask[:, :length]
            position = positions_from_mask(step_mask)[:, -1:]
            out = ours(full_ids[:, length - 1 : length], attention_mask=step_mask, position_ids=position,
                       past_key_values=past, use_cache=True)  # fmt: skip
            torch.testing.assert_close(out.logits[:, 0], full[:, length - 1], atol=1e-5, rtol=1.3e-6)
            past = out.past_key_values
            assert past.get_seq_length() == length


@pytest.fixture(scope="session")
def checks() -> type[Checks]:
    return Checks


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
