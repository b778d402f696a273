"""BERT checkpoint names → pyengine parameter names.

Our names and layouts are transformers' PyTorch ones (`bert.encoder.layer.0.attention.self.query.weight`,
`nn.Linear` weights `[out, in]`), so PyTorch checkpoints map by identity, except the TF-era LayerNorm names
of early checkpoints (`LayerNorm.gamma` / `LayerNorm.beta`), renamed as transformers 4.57 does on load.
The `bert.` prefix is added or stripped by `PreTrainedModel.from_pretrained`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

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


# -- Flax (flax_model.msgpack) ------------------------------------------------------------------------------
# Flax paths are "/"-joined (`encoder/layer/0/attention/self/query/kernel`). Dense kernels are `[in, out]`,
# the transpose of our Linear weights; LayerNorm weights are `scale`; embeddings are `embedding`.


def flax_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Flax params → our names, kernels transposed."""
    out = {}
    for path, array in arrays.items():
        *module, leaf = path.split("/")
        out[".".join(module) + (".bias" if leaf == "bias" else ".weight")] = array.T if leaf == "kernel" else array
    assert len(out) == len(arrays), "two Flax parameters map to the same BERT parameter"
    return out


def pt_to_flax(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Our names (legacy gamma/beta accepted) → Flax params (inverse of `flax_to_pt`; drops buffers)."""
    out = {}
    for name, array in from_pt(arrays).items():
        if name.endswith("position_ids"):
            continue
        *module, leaf = name.split(".")
        if leaf == "weight":
            leaf = "embedding" if module[-1].endswith("embeddings") else "scale" if module[-1] == "LayerNorm" else "kernel"
        out["/".join([*module, leaf])] = array.T if leaf == "kernel" else array
    return out


# -- TensorFlow (tf_model.h5 TFBertModel; TF1 `.ckpt` of the original BERT releases) ------------------------
# TF2 names, model prefix stripped: `bert/encoder/layer_._0/attention/self/query/kernel:0`. Dense kernels are
# `[in, out]` (transpose of our Linear weights); LayerNorm is `gamma`/`beta`; the word embeddings are
# `weight`, the position / token-type ones `embeddings`. TF1 checkpoints name the same tensors without the
# `:0`, with `layer_0` for `layer_._0` and no leaf for embedding tables.


def pt_to_tf(arrays: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Our / transformers' PyTorch names → TF names and layouts (drops buffers and task heads: `cls.`)."""
    out = {}
    for name, array in from_pt(arrays).items():
        if name.endswith(("position_ids", "token_type_ids")) or name.startswith("cls."):
            continue
        name = name.removeprefix("bert.")
        *module, leaf = name.split(".")
        module = [f"layer_._{module[i + 1]}" if p == "layer" else p for i, p in enumerate(module)
                  if not (i > 0 and module[i - 1] == "layer")]  # fmt: skip
        array = np.asarray(array)
        if module[-1] == "LayerNorm":
            leaf = "gamma" if leaf == "weight" else "beta"
        elif module[-1] == "word_embeddings":
            leaf = "weight"
        elif module[-1].endswith("_embeddings"):
            leaf = "embeddings"
        elif leaf == "weight":
            leaf, array = "kernel", array.T
        out["/".join(["bert", *module, leaf]) + ":0"] = array
    return out


def tf_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """TF2 (`...:0`) or TF1 checkpoint names → our PyTorch names (`bert.` prefix; heads keep their names)."""
    out = {}
    for name, array in arrays.items():
        parts = [re.sub(r"^layer_(?:\._)?(\d+)$", r"layer.\1", p) for p in name.removesuffix(":0").split("/")]
        array = np.asarray(array)
        if parts[-1].endswith("_embeddings"):  # TF1: the table itself, no leaf
            parts.append("weight")
        *module, leaf = parts
        if leaf == "kernel":
            leaf, array = "weight", array.T
        else:
            leaf = {"gamma": "weight", "beta": "bias", "embeddings": "weight"}.get(leaf, leaf)
        out[".".join([*module, leaf])] = array
    return out
