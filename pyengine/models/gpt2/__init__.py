"""GPT-2: `GPT2Config` (pure Python) and, imported on first use, the PyTorch classes."""

from __future__ import annotations

from typing import Any

from pyengine.models.gpt2.config import GPT2Config

_TORCH_CLASSES = ("GPT2Model", "GPT2LMHeadModel", "GPT2PreTrainedModel")

__all__ = ["GPT2Config", *_TORCH_CLASSES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_CLASSES:  # lazily, so `import pyengine.models.gpt2` never imports torch
        from pyengine.models.gpt2 import modeling_torch

        return getattr(modeling_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
