"""GPT-2 checkpoint names → pyengine parameter names.

Our parameter names and layouts are transformers' PyTorch ones (`transformer.h.0.attn.c_attn.weight`,
Conv1D weights stored `[in, out]`), so a PyTorch checkpoint (safetensors or `.bin`) maps by identity.
Base-model prefixes (`transformer.`) are added or stripped by `PreTrainedModel.from_pretrained`, and
legacy buffers (`attn.bias`, `attn.masked_bias`) are silenced by the model's ignore list.
TF (`tf_model.h5`) and Flax (`flax_model.msgpack`) maps, with their transposes, will be added here.
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
    assert len(out) == len(arrays), "two checkpoint tensors map to the same GPT-2 parameter"
    return out
