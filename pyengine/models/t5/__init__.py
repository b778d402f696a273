"""T5: `T5Config` (pure Python) and, imported on first use, the PyTorch classes."""

from __future__ import annotations

from typing import Any

from pyengine.models.t5.config import T5Config

_TORCH_CLASSES = ("T5Model", "T5ForConditionalGeneration", "T5EncoderModel", "T5PreTrainedModel",
                  "EncoderDecoderCache")  # fmt: skip

__all__ = ["T5Config", *_TORCH_CLASSES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_CLASSES:  # lazily, so `import pyengine.models.t5` never imports torch
        from pyengine.models.t5 import modeling_torch

        return getattr(modeling_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
