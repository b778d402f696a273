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

import numpy as np


def pt_name(name: str) -> str:
    """Checkpoint name → model name for PyTorch checkpoints: the identity."""
    return name


def from_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Renames a PyTorch-format state dict; asserts every tensor is used exactly once."""
    out = {pt_name(name): array for name, array in arrays.items()}
    assert len(out) == len(arrays), "two checkpoint tensors map to the same T5 parameter"
    return out


# -- Flax (flax_model.msgpack) ------------------------------------------------------------------------------
# Flax paths are "/"-joined (`encoder/block/0/layer/0/SelfAttention/q/kernel`). Dense kernels are
# `[in, out]`, the transpose of our Linear weights; layer norms keep `weight`; `shared` and the relative
# position biases are `embedding`. The embedding aliases exist once (`shared`); `lm_head/kernel` only
# when the head is not tied.

_FLAX_EMBEDDINGS = ("shared", "relative_attention_bias", "embed_tokens")


def flax_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Flax params → our names, kernels transposed."""
    out = {}
    for path, array in arrays.items():
        *module, leaf = path.split("/")
        out[".".join(module) + ".weight"] = array.T if leaf == "kernel" else array
    assert len(out) == len(arrays), "two Flax parameters map to the same T5 parameter"
    return out


def pt_to_flax(arrays: Mapping[str, Any], tie_word_embeddings: bool = True) -> dict[str, Any]:
    """Our names → Flax params (inverse of `flax_to_pt`; drops the embedding aliases and a tied head)."""
    out = {}
    for name, array in arrays.items():
        if name.endswith("embed_tokens.weight") or (tie_word_embeddings and name == "lm_head.weight"):
            continue
        *module, _ = name.split(".")
        leaf = "embedding" if module[-1] in _FLAX_EMBEDDINGS else "weight" if module[-1].endswith("layer_norm") else "kernel"
        out["/".join([*module, leaf])] = array.T if leaf == "kernel" else array
    return out


# -- TensorFlow (tf_model.h5, TFT5ForConditionalGeneration) ---------------------------------------------------
# TF names, model prefix stripped: `encoder/block_._0/layer_._0/SelfAttention/q/kernel:0`. Dense kernels are
# `[in, out]` (transpose of our Linear weights); layer norms keep `weight`; `shared` and the relative
# position biases are `embeddings` (`shared/embeddings:0`). The untied head is `lm_head/kernel:0` `[E, V]`.

_TF_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def pt_to_tf(arrays: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Our / transformers' PyTorch names → TF names and layouts (embedding aliases and a tied head dropped)."""
    tied = bool(getattr(config, "tie_word_embeddings", True))
    out = {}
    for name, array in arrays.items():
        if name in _TF_ALIASES or (tied and name == "lm_head.weight") or name.endswith(
                "EncDecAttention.relative_attention_bias.weight"):  # fmt: skip
            continue
        *module, leaf = name.split(".")
        module = [f"{p}_._{module[i + 1]}" if p in ("block", "layer") else p for i, p in enumerate(module)
                  if not (i > 0 and module[i - 1] in ("block", "layer"))]  # fmt: skip
        array = np.asarray(array)
        if module[-1] in ("shared", "relative_attention_bias"):
            leaf = "embeddings"
        elif not module[-1].endswith("layer_norm"):
            leaf, array = "kernel", array.T
        out["/".join([*module, leaf]) + ":0"] = array
    if "shared/embeddings:0" not in out:
        for alias in _TF_ALIASES:
            if alias in arrays:
                out["shared/embeddings:0"] = np.asarray(arrays[alias])
                break
    return out


def tf_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """TF names → our PyTorch names (inverse of `pt_to_tf`)."""
    out = {}
    for name, array in arrays.items():
        *module, leaf = name.removesuffix(":0").split("/")
        module = [p.replace("_._", ".") for p in module]
        array = np.asarray(array)
        if leaf == "kernel":
            leaf, array = "weight", array.T
        elif leaf == "embeddings":
            leaf = "weight"
        out[".".join([*module, leaf])] = array
    return out
