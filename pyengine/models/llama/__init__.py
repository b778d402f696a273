"""LLaMA: `LlamaConfig` (pure Python) and, imported on first use, the PyTorch classes."""

from __future__ import annotations

from typing import Any

from pyengine.models.llama.config import LlamaConfig

_TORCH_CLASSES = ("LlamaModel", "LlamaForCausalLM", "LlamaPreTrainedModel")

__all__ = ["LlamaConfig", *_TORCH_CLASSES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_CLASSES:  # lazily, so `import pyengine.models.llama` never imports torch
        from pyengine.models.llama import modeling_torch

        return getattr(modeling_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
