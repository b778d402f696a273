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

import numpy as np


def pt_name(name: str) -> str:
    """Checkpoint name → model name for PyTorch checkpoints: the identity."""
    return name


def from_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Renames a PyTorch-format state dict; asserts every tensor is used exactly once."""
    out = {pt_name(name): array for name, array in arrays.items()}
    assert len(out) == len(arrays), "two checkpoint tensors map to the same LLaMA parameter"
    return out


# -- Flax (flax_model.msgpack) ------------------------------------------------------------------------------
# Flax paths are "/"-joined (`model/layers/0/self_attn/q_proj/kernel`). Dense kernels are `[in, out]`, the
# transpose of our Linear weights; RMSNorm keeps `weight`; embeddings are `embedding`; the untied LM head
# is `lm_head/kernel`.


def flax_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Flax params → our names, kernels transposed."""
    out = {}
    for path, array in arrays.items():
        *module, leaf = path.split("/")
        name = ".".join(module) + (".bias" if leaf == "bias" else ".weight")
        out[name] = array.T if leaf == "kernel" else array
    assert len(out) == len(arrays), "two Flax parameters map to the same LLaMA parameter"
    return out


def pt_to_flax(arrays: Mapping[str, Any], tie_word_embeddings: bool = False) -> dict[str, Any]:
    """Our names → Flax params (inverse of `flax_to_pt`; drops RoPE buffers and a tied head)."""
    out = {}
    for name, array in arrays.items():
        if name.endswith("rotary_emb.inv_freq") or (tie_word_embeddings and name == "lm_head.weight"):
            continue
        *module, leaf = name.split(".")
        if leaf == "weight":
            leaf = "embedding" if module[-1] == "embed_tokens" else "weight" if module[-1].endswith("norm") else "kernel"
        out["/".join([*module, leaf])] = array.T if leaf == "kernel" else array
    return out


# -- TensorFlow (tf_model.h5, TFLlamaForCausalLM; pyengine's own: transformers has no TF LLaMA) ------------
# TF names follow transformers' TF conventions: `model/layers_._0/self_attn/q_proj/kernel:0`. Dense kernels
# are `[in, out]` (transpose of our Linear weights); RMSNorm keeps `weight`; embeddings are `embeddings`;
# the untied LM head is `lm_head/kernel:0`.


def pt_to_tf(arrays: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Our / transformers' PyTorch names → TF names and layouts (`LlamaModel` checkpoints get `model.`)."""
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = {}
    for name, array in arrays.items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        name = name if name.startswith(("model.", "lm_head.")) else f"model.{name}"
        *module, leaf = name.split(".")
        module = [f"layers_._{module[i + 1]}" if p == "layers" else p for i, p in enumerate(module)
                  if not (i > 0 and module[i - 1] == "layers")]  # fmt: skip
        array = np.asarray(array)
        if leaf == "weight" and module[-1] == "embed_tokens":
            leaf = "embeddings"
        elif leaf == "weight" and not module[-1].endswith("norm"):
            leaf, array = "kernel", array.T
        out["/".join([*module, leaf]) + ":0"] = array
    return out


def tf_to_pt(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """TF names → our PyTorch names (inverse of `pt_to_tf`)."""
    out = {}
    for name, array in arrays.items():
        *module, leaf = name.removesuffix(":0").split("/")
        module = [p.replace("layers_._", "layers.") for p in module]
        array = np.asarray(array)
        if leaf == "kernel":
            leaf, array = "weight", array.T
        elif leaf == "embeddings":
            leaf = "weight"
        out[".".join([*module, leaf])] = array
    return out
