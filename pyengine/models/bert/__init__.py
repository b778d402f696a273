"""BERT: `BertConfig` (pure Python) and, imported on first use, the PyTorch encoder classes."""

from __future__ import annotations

from typing import Any

from pyengine.models.bert.config import BertConfig

_TORCH_CLASSES = ("BertModel", "BertPreTrainedModel")

__all__ = ["BertConfig", *_TORCH_CLASSES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_CLASSES:  # lazily, so `import pyengine.models.bert` never imports torch
        from pyengine.models.bert import modeling_torch

        return getattr(modeling_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
