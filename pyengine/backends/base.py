"""The Backend protocol: everything the engine may ask of a framework.

The engine (`pyengine/engine/`) never imports a framework; it holds a Backend and calls these few array
primitives plus the op table. Arrays are the framework's own (`torch.Tensor`, `np.ndarray`, ...).
"""

from __future__ import annotations

from typing import Any, Protocol

from pyengine.ops.registry import OpTable

Array = Any


class Backend(Protocol):
    name: str
    ops: OpTable  # the processors and selection ops, implementations chosen once

    def token_buffer(self, prompt: Array, total_len: int, fill: int) -> Array:
        """A `[B, total_len]` integer buffer holding `prompt` `[B, S]` in its first S columns."""

    def set_column(self, buffer: Array, col: int, values: Array) -> None:
        """`buffer[:, col] = values` in place."""

    def where(self, cond: Array, a: Array, b: Array) -> Array: ...

    def isin(self, values: Array, ids: list[int]) -> Array:
        """Boolean `[B]`: which values are one of `ids`."""

    def zeros_bool(self, n: int) -> Array: ...

    def logical_or(self, a: Array, b: Array) -> Array: ...

    def all(self, x: Array) -> bool:
        """Host-side reduction (one device sync)."""

    def to_float32(self, x: Array) -> Array: ...

    def sample(self, scores: Array, rng: Any) -> Array:
        """Draw one token per row from softmax(scores) with the backend's random source."""
