"""Tiny random models for the reliability tests, plus a model whose logits can be poisoned.

Sizes are the smallest that still exercise every code path (1 layer, hidden 16, vocab 50) so that a
hypothesis example costs a few milliseconds. Models are cached per process: hypothesis reruns a test body
many times and a function-scoped fixture would be rebuilt (and is refused by its health check).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402
from pyengine.models.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402

VOCAB = 50
EOS = 2  # the models' default EOS; 0 (argmax of an all -inf row) is kept distinct from it on purpose
N_POSITIONS = 24  # GPT-2's learned position table
LLAMA_MAX_POSITIONS = 32  # LLaMA's RoPE tables grow past this on demand

GPT2_KWARGS = dict(vocab_size=VOCAB, n_positions=N_POSITIONS, n_embd=16, n_layer=1, n_head=2,
                   bos_token_id=1, eos_token_id=EOS)  # fmt: skip
LLAMA_KWARGS = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=LLAMA_MAX_POSITIONS,
                    bos_token_id=1, eos_token_id=EOS)  # fmt: skip


class PoisonedGPT2(GPT2LMHeadModel):
    """GPT-2 whose forward passes its logits `[B, S, V]` through `self.poison` (NaN/inf injection)."""

    poison: Callable[[Any], Any] | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().forward(*args, **kwargs)
        if self.poison is not None:
            out.logits = self.poison(out.logits.clone())
        return out


@functools.cache
def tiny_model(family: str, seed: int = 0) -> Any:
    """A seeded random `gpt2` / `llama` / `poisoned_gpt2` causal LM in eval mode (shared: do not mutate)."""
    torch.manual_seed(seed)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**LLAMA_KWARGS)).eval()
    cls = PoisonedGPT2 if family == "poisoned_gpt2" else GPT2LMHeadModel
    return cls(GPT2Config(**GPT2_KWARGS)).eval()
