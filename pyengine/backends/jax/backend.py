"""The JAX backend: the processor ops of `native.py` plus the array primitives the engine asks for.

Two ways to run the engine on it:
- compiled (`engine/compiled.py` under `jax.jit`): `while_loop` is `lax.while_loop`, the token buffer is
  a jax array updated with `dynamic_update_slice`, randomness is a PRNG key split once per step;
- eager (`engine/loop.py`, `JaxBackend(eager=True)`, Flax `generate(trace=False)`): the token buffer is a
  host NumPy array written in place, each op runs eagerly, and `rng` is a `KeyStream` that splits the
  same key the same way, so both modes draw the same tokens for one `prng_key`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pyengine.backends.jax import kernels, native
from pyengine.ops.registry import Impl, OpTable

OP_NAMES = ("temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
            "inf_nan_remove", "top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores")  # fmt: skip
OPS = {name: [Impl("native", getattr(native, name))] for name in OP_NAMES}
# The sampling warpers' and the token choice's row kernels as XLA custom calls (backends/jax/kernels.py), ahead
# of the native ops.
for _name in ("top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores"):
    OPS[_name].insert(0, Impl("cpp", getattr(kernels, f"cpp_{_name}"), available=kernels.cpp_available))

_DTYPES = {"int64": jnp.int32, "int32": jnp.int32, "float32": jnp.float32, "bool": jnp.bool_}  # no x64 by default


class KeyStream:
    """A PRNG key that advances on every draw (the eager loop passes one `rng` object to every step)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def next(self) -> Any:
        self.key, sub = jax.random.split(self.key)
        return sub


class JaxBackend:
    name = "jax"

    def __init__(self, eager: bool = False) -> None:
        self.eager = eager
        self.ops = OpTable(OPS)

    def token_buffer(self, prompt: Any, total_len: int, fill: int) -> Any:
        if self.eager:
            buf = np.full((prompt.shape[0], total_len), fill, dtype=np.int32)
            buf[:, : prompt.shape[1]] = np.asarray(prompt)
            return buf
        buf = jnp.full((prompt.shape[0], total_len), fill, dtype=jnp.int32)
        return lax.dynamic_update_slice(buf, jnp.asarray(prompt, dtype=jnp.int32), (0, 0))

    def set_column(self, buffer: np.ndarray, col: int, values: Any) -> None:
        buffer[:, col] = np.asarray(values)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return jnp.where(cond, a, b)

    def isin(self, values: Any, ids: list[int]) -> Any:
        return jnp.isin(values, jnp.asarray(ids, dtype=jnp.int32))

    def zeros_bool(self, n: int) -> Any:
        return jnp.zeros((n,), dtype=jnp.bool_)

    def logical_or(self, a: Any, b: Any) -> Any:
        return jnp.logical_or(a, b)

    def all(self, x: Any) -> bool:
        return bool(jnp.all(x))

    def to_float32(self, x: Any) -> Any:
        return jnp.asarray(x, dtype=jnp.float32)

    def sample(self, scores: Any, rng: Any) -> Any:
        """One token per row from softmax(scores): inverse CDF with `jax.random.uniform(key)` noise."""
        key = rng.next() if isinstance(rng, KeyStream) else rng
        return self.ops.sample_from_scores(scores, jax.random.uniform(key, (scores.shape[0],), dtype=jnp.float32))

    # -- compiled-loop primitives (engine/compiled.py) --------------------------------------------------------
    def while_loop(self, cond: Any, body: Any, state: tuple) -> tuple:
        return lax.while_loop(cond, body, state)

    def all_traced(self, x: Any) -> Any:
        return jnp.all(x)

    def rng_split(self, rng: Any) -> tuple[Any, Any]:
        key, sub = jax.random.split(rng)
        return key, sub

    def dynamic_set_column(self, buffer: Any, col: Any, values: Any) -> Any:
        return lax.dynamic_update_slice(buffer, values.astype(buffer.dtype)[:, None], (0, col))

    def dynamic_set_step(self, buffer: Any, step: Any, values: Any) -> Any:
        return lax.dynamic_update_slice(buffer, values.astype(buffer.dtype)[:, None, :], (0, step, 0))

    # -- small array primitives ---------------------------------------------------------------------------------
    def arange(self, n: int) -> Any:
        return jnp.arange(n)

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> Any:
        return jnp.full(shape, value, dtype=_DTYPES[dtype])

    def copy(self, x: Any) -> Any:
        return jnp.array(x, copy=True)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return jnp.reshape(x, shape)

    def cast(self, x: Any, dtype: str) -> Any:
        return jnp.asarray(x).astype(_DTYPES[dtype])

    def cat(self, xs: list[Any], axis: int) -> Any:
        return jnp.concatenate(xs, axis=axis)

    def log_softmax(self, x: Any) -> Any:
        return jax.nn.log_softmax(x, axis=-1)

    def asarray(self, values: Any, dtype: str) -> Any:
        return jnp.asarray(values, dtype=_DTYPES[dtype])

    # -- beam search primitives (the Flax beam search runs its bookkeeping on NumPy; these complete the protocol)
    def topk(self, x: Any, k: int) -> tuple[Any, Any]:
        return lax.top_k(x, k)  # ties: lower index first

    def take_along(self, x: Any, index: Any, axis: int) -> Any:
        while index.ndim < x.ndim:
            index = index[..., None]
        shape = list(x.shape)
        shape[axis] = index.shape[axis]
        return jnp.take_along_axis(x, jnp.broadcast_to(index, shape), axis=axis)

    def sample_without_replacement(self, scores: Any, k: int, rng: Any) -> Any:
        """Gumbel top-k: k distinct draws from softmax(scores) per row."""
        key = rng.next() if isinstance(rng, KeyStream) else rng
        return lax.top_k(scores + jax.random.gumbel(key, scores.shape, dtype=jnp.float32), k)[1]

    def any(self, x: Any) -> bool:
        return bool(jnp.any(x))

    def any_axis(self, x: Any, axis: int, keepdims: bool = False) -> Any:
        return jnp.any(x, axis=axis, keepdims=keepdims)

    def all_axis(self, x: Any, axis: int, keepdims: bool = False) -> Any:
        return jnp.all(x, axis=axis, keepdims=keepdims)

    def min_axis(self, x: Any, axis: int, keepdims: bool = False) -> Any:
        return jnp.min(x, axis=axis, keepdims=keepdims)

    def sum_axis(self, x: Any, axis: int) -> Any:
        return jnp.sum(x, axis=axis)

    def max_int(self, x: Any) -> int:
        return int(jnp.max(x))

    def to_list(self, x: Any) -> list:
        return np.asarray(x).tolist()
