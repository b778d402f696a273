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

import numpy as np


def pt_name(name: str) -> str:
    """Checkpoint name → model name for PyTorch checkpoints: the identity."""
    return name


def from_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Renames a PyTorch-format state dict; asserts every tensor is used exactly once."""
    out = {pt_name(name): array for name, array in arrays.items()}
    assert len(out) == len(arrays), "two checkpoint tensors map to the same GPT-2 parameter"
    return out


# -- Flax (flax_model.msgpack) ------------------------------------------------------------------------------
# Flax paths are "/"-joined (`transformer/h/0/attn/c_attn/kernel`). transformers' Flax GPT-2 stores its
# Conv1D kernels `[out, in]`, i.e. the transpose of our `[in, out]` weights; LayerNorm weights are `scale`,
# embeddings `embedding`. The LM head is the tied `wte` (no `lm_head` in Flax checkpoints).

_FLAX_SKIP = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # buffers and the tied head


def flax_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Flax params `{"transformer/h/0/attn/c_attn/kernel": a}` → our names, kernels transposed."""
    out = {}
    for path, array in arrays.items():
        *module, leaf = path.split("/")
        name = ".".join(module) + (".bias" if leaf == "bias" else ".weight")
        out[name] = array.T if leaf == "kernel" else array
    assert len(out) == len(arrays), "two Flax parameters map to the same GPT-2 parameter"
    return out


def pt_to_flax(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Our names → Flax params (inverse of `flax_to_pt`; drops the tied LM head and legacy buffers)."""
    out = {}
    for name, array in arrays.items():
        if name.endswith(_FLAX_SKIP):
            continue
        *module, leaf = name.split(".")
        if leaf == "weight":
            leaf = "embedding" if module[-1] in ("wte", "wpe") else "scale" if module[-1].startswith("ln_") else "kernel"
        out["/".join([*module, leaf])] = array.T if leaf == "kernel" else array
    return out


# -- TensorFlow (tf_model.h5, TFGPT2LMHeadModel) -------------------------------------------------------------
# TF names, model prefix stripped: `transformer/h_._0/attn/c_attn/weight:0`. Conv1D weights keep our
# `[in, out]` layout; their biases are `[1, out]`; LayerNorm is `gamma`/`beta`, embeddings `embeddings`.
# The LM head is the tied `wte` (no `lm_head` in TF checkpoints).

_TF_SKIP = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # buffers and the tied head


def _tf_name(name: str) -> str:
    *module, leaf = name.split(".")
    module = [f"h_._{module[i + 1]}" if part == "h" else part for i, part in enumerate(module)
              if not (i > 0 and module[i - 1] == "h")]  # fmt: skip
    if module[-1] in ("wte", "wpe"):
        leaf = "embeddings"
    elif module[-1].startswith("ln_"):
        leaf = "gamma" if leaf == "weight" else "beta"
    return "/".join(module + [leaf]) + ":0"


def pt_to_tf(arrays: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Our / transformers' PyTorch names → TF names and layouts (`GPT2Model` checkpoints get `transformer.`)."""
    out = {}
    for name, array in arrays.items():
        if name.endswith(_TF_SKIP):
            continue
        name = name if name.startswith("transformer.") else f"transformer.{name}"
        array = np.asarray(array)
        out[_tf_name(name)] = array[None] if name.endswith(".bias") and "ln_" not in name else array
    assert len(out) == len([n for n in arrays if not n.endswith(_TF_SKIP)]), "two tensors map to one TF weight"
    return out


def tf_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """TF names → our PyTorch names (inverse of `pt_to_tf`); Conv1D biases back to `[out]`."""
    out = {}
    for name, array in arrays.items():
        parts = name.removesuffix(":0").split("/")
        *module, leaf = parts
        module = [p.replace("h_._", "h.") for p in module]
        leaf = {"embeddings": "weight", "gamma": "weight", "beta": "bias"}.get(leaf, leaf)
        array = np.asarray(array)
        out[".".join(module + [leaf])] = array.reshape(-1) if leaf == "bias" else array
    return out
