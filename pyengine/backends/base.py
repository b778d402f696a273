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

    # -- compiled-loop primitives (engine/compiled.py; TF, JAX and NumPy, which is the oracle) ----------
    def while_loop(self, cond: Any, body: Any, state: tuple) -> tuple:
        """`while cond(state): state = body(state)`; state is a tuple of arrays (nests allowed)."""

    def all_traced(self, x: Array) -> Array:
        """0-d bool array: every element true (stays on the device, unlike `all`)."""

    def rng_split(self, rng: Any) -> tuple[Any, Any]:
        """(next state, key for this draw); `sample(scores, key)` then draws."""

    def dynamic_set_column(self, buffer: Array, col: Array, values: Array) -> Array:
        """A copy of `buffer` `[B, T]` with column `col` (0-d int array) set to `values` `[B]`."""

    def dynamic_set_step(self, buffer: Array, step: Array, values: Array) -> Array:
        """A copy of `buffer` `[B, N, V]` with `[:, step]` set to `values` `[B, V]`."""

    # -- array primitives used by beam search (torch semantics; numpy mirrors them) --------------------
    def arange(self, n: int) -> Array: ...

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> Array:
        """dtype is one of "int64", "float32", "bool"."""

    def copy(self, x: Array) -> Array: ...

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array: ...

    def cast(self, x: Array, dtype: str) -> Array: ...

    def cat(self, xs: list[Array], axis: int) -> Array: ...

    def log_softmax(self, x: Array) -> Array:
        """Over the last axis."""

    def topk(self, x: Array, k: int) -> tuple[Array, Array]:
        """Largest k along the last axis, sorted descending: (values, indices)."""

    def take_along(self, x: Array, index: Array, axis: int) -> Array:
        """Gather along `axis`; `index` gets trailing unit axes until it has `x`'s rank, then broadcasts."""

    def sample_without_replacement(self, scores: Array, k: int, rng: Any) -> Array:
        """k distinct indices per row drawn from softmax(scores) `[B, k]`."""

    def any(self, x: Array) -> bool: ...

    def any_axis(self, x: Array, axis: int, keepdims: bool = False) -> Array: ...

    def all_axis(self, x: Array, axis: int, keepdims: bool = False) -> Array: ...

    def min_axis(self, x: Array, axis: int, keepdims: bool = False) -> Array: ...

    def sum_axis(self, x: Array, axis: int) -> Array: ...

    def max_int(self, x: Array) -> int: ...

    def to_list(self, x: Array) -> list:
        """Host copy as nested Python lists (one sync)."""

    def asarray(self, values: list, dtype: str) -> Array: ...

