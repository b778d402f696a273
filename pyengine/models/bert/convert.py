"""BERT checkpoint names → pyengine parameter names.

Our names and layouts are transformers' PyTorch ones (`bert.encoder.layer.0.attention.self.query.weight`,
`nn.Linear` weights `[out, in]`), so PyTorch checkpoints map by identity, except the TF-era LayerNorm names
of early checkpoints (`LayerNorm.gamma` / `LayerNorm.beta`), renamed as transformers 4.57 does on load.
The `bert.` prefix is added or stripped by `PreTrainedModel.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Legacy suffix → current suffix (transformers `PreTrainedModel._fix_state_dict_key_on_load`).
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def pt_name(name: str) -> str:
    """Checkpoint name → model name for PyTorch checkpoints."""
    for old, new in LEGACY_SUFFIXES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def from_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Renames a PyTorch-format state dict; asserts every tensor is used exactly once."""
    out = {pt_name(name): array for name, array in arrays.items()}
    assert len(out) == len(arrays), "two checkpoint tensors map to the same BERT parameter"
    return out
