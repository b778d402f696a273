"""The NumPy backend: the reference ops bound as a Backend. It is the oracle for every other backend and
the engine's test backend (a fake step function makes engine behaviour exact on it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.ops import beam, fused, logits, sampling
from pyengine.ops.registry import Impl, OpTable

OPS = {
    name: [Impl("reference", getattr(module, name))]
    for module, names in (
        (logits, ("temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
                  "inf_nan_remove", "hamming_diversity")),
        (sampling, ("top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores")),
        (fused, ("fused_argmax", "fused_sample")),
        (beam, ("beam_step", "kv_reorder_suffix")),
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

    # -- compiled-loop primitives (engine/compiled.py); here a plain Python loop, the oracle -------------
    def while_loop(self, cond: Any, body: Any, state: tuple) -> tuple:
        while bool(cond(state)):
            state = body(state)
        return state

    def all_traced(self, x: np.ndarray) -> np.ndarray:
        return np.all(x)

    def rng_split(self, rng: np.random.Generator) -> tuple[np.random.Generator, np.random.Generator]:
        return rng, rng  # a Generator is stateful: drawing from it advances it

    def dynamic_set_column(self, buffer: np.ndarray, col: Any, values: np.ndarray) -> np.ndarray:
        out = buffer.copy()
        out[:, int(col)] = values
        return out

    def dynamic_set_step(self, buffer: np.ndarray, step: Any, values: np.ndarray) -> np.ndarray:
        out = buffer.copy()
        out[:, int(step)] = values
        return out

    # -- beam search primitives -----------------------------------------------------------------------
    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    def copy(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    def reshape(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return np.reshape(x, shape)

    def cast(self, x: np.ndarray, dtype: str) -> np.ndarray:
        return np.asarray(x).astype(dtype)

    def cat(self, xs: list[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(xs, axis=axis)

    def log_softmax(self, x: np.ndarray) -> np.ndarray:
        m = np.max(x, axis=-1, keepdims=True)
        shifted = x - m
        return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(x.dtype)

    def topk(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Ties: lower index first (the reference's tie-breaking rule).
        idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
        return np.take_along_axis(x, idx, axis=-1), idx

    def take_along(self, x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
        while index.ndim < x.ndim:
            index = index[..., None]
        shape = list(x.shape)
        shape[axis] = index.shape[axis]
        return np.take_along_axis(x, np.broadcast_to(index, shape), axis=axis)

    def sample_without_replacement(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        probs = np.exp(self.log_softmax(scores.astype(np.float64)))
        return np.stack([rng.choice(probs.shape[-1], size=k, replace=False, p=row) for row in probs])

    def any(self, x: np.ndarray) -> bool:
        return bool(np.any(x))

    def any_axis(self, x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
        return np.any(x, axis=axis, keepdims=keepdims)

    def all_axis(self, x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
        return np.all(x, axis=axis, keepdims=keepdims)

    def min_axis(self, x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
        return np.min(x, axis=axis, keepdims=keepdims)

    def sum_axis(self, x: np.ndarray, axis: int) -> np.ndarray:
        return x.sum(axis=axis)

    def max_int(self, x: np.ndarray) -> int:
        return int(np.max(x))

    def to_list(self, x: np.ndarray) -> list:
        return x.tolist()

    def asarray(self, values: list, dtype: str) -> np.ndarray:
        return np.asarray(values, dtype=dtype)

