"""LLaMA checkpoint names → pyengine parameter names.

Our parameter names and layouts are transformers' PyTorch ones (`model.layers.0.self_attn.q_proj.weight`,
Linear weights `[out, in]`), so a PyTorch checkpoint (safetensors or `.bin`) maps by identity. Base-model
prefixes (`model.`) are added or stripped by `PreTrainedModel.from_pretrained`; per-layer
`rotary_emb.inv_freq` buffers of old checkpoints are silenced by the model's ignore list. GGUF files arrive
already in these names (`pyengine.checkpoints.gguf` un-permutes Q/K). TF / Flax maps will be added here.
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
    assert len(out) == len(arrays), "two checkpoint tensors map to the same LLaMA parameter"
    return out
