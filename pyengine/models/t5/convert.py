"""T5 checkpoint names → pyengine parameter names.

Our parameter names and layouts are transformers' PyTorch ones
(`encoder.block.0.layer.0.SelfAttention.q.weight`, Linear weights `[out, in]`), so a PyTorch checkpoint
(safetensors or `.bin`) maps by identity. The embedding aliases (`encoder.embed_tokens.weight`,
`decoder.embed_tokens.weight`, and `lm_head.weight` when tied) may or may not be present: they are one
Parameter with `shared.weight`, so any one of them loads all. The stray
`decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight` of old checkpoints is silenced by
the model's ignore list. TF / Flax maps will be added here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pt_name(name: str) -> str:
    """Checkpoint name → model name for PyTorch checkpoints: the identity."""
    return name


def from_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Renames a PyTorch-format state dict; asserts every tensor is used exactly once."""
    out = {pt_name(name): array for name, array in arrays.items()}
    assert len(out) == len(arrays), "two checkpoint tensors map to the same T5 parameter"
    return out
