"""The PyTorch backend: array primitives for the engine and the op table for torch tensors.

The op table lists implementations in preference order; `native` (plain torch, transformers' exact
arithmetic) is always available. Accelerated C++/Triton/CUDA entries join the table in later issues.
"""

from __future__ import annotations

from typing import Any

import torch

from pyengine.backends.torch import native
from pyengine.ops.registry import Impl, OpTable

OP_NAMES = (
    "temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
    "inf_nan_remove", "top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores",
)
OPS = {name: [Impl("native", getattr(native, name))] for name in OP_NAMES}


class TorchBackend:
    name = "torch"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.ops = OpTable(OPS)

    def token_buffer(self, prompt: torch.Tensor, total_len: int, fill: int) -> torch.Tensor:
        buf = torch.full((prompt.shape[0], total_len), fill, dtype=torch.long, device=prompt.device)
        buf[:, : prompt.shape[1]] = prompt
        return buf

    def set_column(self, buffer: torch.Tensor, col: int, values: torch.Tensor) -> None:
        buffer[:, col] = values

    def where(self, cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def isin(self, values: torch.Tensor, ids: list[int]) -> torch.Tensor:
        return torch.isin(values, torch.tensor(ids, device=values.device))

    def zeros_bool(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.bool, device=self.device)

    def logical_or(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a | b

    def all(self, x: torch.Tensor) -> bool:
        return bool(x.all())

    def to_float32(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=torch.float32, copy=True)

    def sample(self, scores: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        return self.ops.sample_from_scores(scores, rng)
