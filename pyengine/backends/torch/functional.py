"""Activations and the causal-LM loss shared by the PyTorch model families (transformers' names)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GELU, written exactly as transformers' `NewGELUActivation` (bit-for-bit on CPU)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT2FN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": gelu_new,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation by its transformers name; unknown names raise with the supported list."""
    if name not in ACT2FN:
        raise ValueError(f"Unsupported activation function {name!r}; supported: {sorted(ACT2FN)}.")
    return ACT2FN[name]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross entropy (transformers `ForCausalLMLoss`): labels shift left inside, in float32."""
    labels = F.pad(labels.to(logits.device), (0, 1), value=ignore_index)[:, 1:]  # [B, S]
    logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index)
