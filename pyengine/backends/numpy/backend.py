"""The NumPy backend: the reference ops bound as a Backend. It is the oracle for every other backend and
the engine's test backend (a fake step function makes engine behaviour exact on it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.ops import logits, sampling
from pyengine.ops.registry import Impl, OpTable

OPS = {
    name: [Impl("reference", getattr(module, name))]
    for module, names in (
        (logits, ("temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
                  "inf_nan_remove")),
        (sampling, ("top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores")),
    )
    for name in names
}


class NumpyBackend:
    name = "numpy"

    def __init__(self) -> None:
        self.ops = OpTable(OPS)

    def token_buffer(self, prompt: np.ndarray, total_len: int, fill: int) -> np.ndarray:
        buf = np.full((prompt.shape[0], total_len), fill, dtype=np.int64)
        buf[:, : prompt.shape[1]] = prompt
        return buf

    def set_column(self, buffer: np.ndarray, col: int, values: np.ndarray) -> None:
        buffer[:, col] = values

    def where(self, cond: np.ndarray, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def isin(self, values: np.ndarray, ids: list[int]) -> np.ndarray:
        return np.isin(values, ids)

    def zeros_bool(self, n: int) -> np.ndarray:
        return np.zeros(n, dtype=bool)

    def logical_or(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a | b

    def all(self, x: np.ndarray) -> bool:
        return bool(np.all(x))

    def to_float32(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def sample(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.ops.sample_from_scores(scores, rng.random(scores.shape[0]))
