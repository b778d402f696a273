"""The TensorFlow backend: array primitives for the engine and the op table for TF tensors.

Two loops use it:
- the eager loop (`engine/loop.py`): the token buffer is a `tf.Variable` so `set_column` can write in
  place; the random source is a `tf.random.Generator` (seeded: `from_seed`);
- the compiled loop (`engine/compiled.py`) inside `tf.function(jit_compile=True)`: everything is
  functional (`dynamic_set_column`, `tf.while_loop`) and the random source is a stateless seed `[2]`
  split once per step.
The op table has one implementation per op, `native` (`native.py`), which is also the XLA path.
"""

from __future__ import annotations

from typing import Any

from pyengine.backends.tf import kernels, native, tf
from pyengine.ops.registry import Impl, OpTable

OP_NAMES = (
    "temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
    "inf_nan_remove", "top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores",
)
OPS = {name: [Impl("native", getattr(native, name))] for name in OP_NAMES}
# The warpers' and the token choice's row kernels as XLA custom calls (backends/tf/kernels.py), ahead of the
# native ops; they run only while traced for XLA and hand everything else to the native op.
for _name in ("top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores"):
    OPS[_name].insert(0, Impl("cpp", getattr(kernels, f"cpp_{_name}"), available=kernels.cpp_available))

_DTYPES = {"int32": tf.int32, "int64": tf.int64, "float32": tf.float32, "bool": tf.bool}


class TFBackend:
    name = "tf"

    def __init__(self) -> None:
        self.ops = OpTable(OPS)

    def token_buffer(self, prompt: tf.Tensor, total_len: int, fill: int) -> tf.Tensor | tf.Variable:
        """`[B, total_len]` int32 holding `prompt`; a `tf.Variable` when eager (written in place by
        `set_column`), a tensor when traced (written by `dynamic_set_column`)."""
        prompt = tf.cast(prompt, tf.int32)
        pad = tf.fill([tf.shape(prompt)[0], total_len - prompt.shape[1]], tf.constant(fill, tf.int32))
        buf = tf.concat([prompt, pad], axis=1)
        return tf.Variable(buf, trainable=False) if tf.executing_eagerly() else buf

    def set_column(self, buffer: tf.Variable, col: int, values: tf.Tensor) -> None:
        buffer[:, col].assign(tf.cast(values, buffer.dtype))

    def where(self, cond: Any, a: Any, b: Any) -> tf.Tensor:
        if not isinstance(b, (tf.Tensor, tf.Variable)):
            b = tf.constant(b)
        dtype = b.dtype if isinstance(b, (tf.Tensor, tf.Variable)) else None
        a = tf.cast(a, dtype) if dtype is not None else a
        return tf.where(cond, a, b)

    def isin(self, values: tf.Tensor, ids: list[int]) -> tf.Tensor:
        values = tf.cast(values, tf.int32)
        return tf.reduce_any(values[:, None] == tf.constant(ids, tf.int32)[None, :], axis=1)

    def zeros_bool(self, n: int) -> tf.Tensor:
        return tf.zeros([n], tf.bool)

    def logical_or(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.logical_or(a, b)

    def all(self, x: tf.Tensor) -> bool:
        return bool(tf.reduce_all(x))

    def to_float32(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.float32)

    def sample(self, scores: tf.Tensor, rng: Any) -> tf.Tensor:
        """One draw per row: `rng` is a `tf.random.Generator` (eager) or a stateless seed `[2]` (compiled)."""
        batch = tf.shape(scores)[0:1]
        if isinstance(rng, tf.random.Generator):
            uniform = rng.uniform(batch, dtype=tf.float32)
        else:
            uniform = tf.random.stateless_uniform(batch, seed=rng, dtype=tf.float32)
        return self.ops.sample_from_scores(scores, uniform)

    # -- compiled-loop primitives (engine/compiled.py) ------------------------------------------------
    def while_loop(self, cond: Any, body: Any, state: tuple) -> tuple:
        out = tf.while_loop(lambda *s: cond(tuple(s)), lambda *s: tuple(body(tuple(s))), loop_vars=tuple(state))
        return tuple(out)

    def all_traced(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_all(x)

    def rng_split(self, rng: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pair = tf.random.experimental.stateless_split(rng, num=2)  # [2, 2]
        return pair[0], pair[1]

    def dynamic_set_column(self, buffer: tf.Tensor, col: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        hit = tf.range(buffer.shape[1]) == tf.cast(col, tf.int32)  # [T]; B*T is small, a select is cheapest
        return tf.where(hit[None, :], tf.cast(values, buffer.dtype)[:, None], buffer)

    def dynamic_set_step(self, buffer: tf.Tensor, step: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(buffer)[0]
        index = tf.stack([tf.range(batch), tf.fill([batch], tf.cast(step, tf.int32))], axis=1)  # [B, 2]
        return tf.tensor_scatter_nd_update(buffer, index, tf.cast(values, buffer.dtype))  # rows [V] at (b, step)

    # -- small array primitives -----------------------------------------------------------------------
    def arange(self, n: int) -> tf.Tensor:
        return tf.range(n)

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> tf.Tensor:
        return tf.fill(list(shape), tf.constant(value, _DTYPES[dtype]))

    def copy(self, x: tf.Tensor) -> tf.Tensor:
        return tf.identity(x)

    def reshape(self, x: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
        return tf.reshape(x, shape)

    def cast(self, x: tf.Tensor, dtype: str) -> tf.Tensor:
        return tf.cast(x, _DTYPES[dtype])

    def cat(self, xs: list[tf.Tensor], axis: int) -> tf.Tensor:
        return tf.concat(xs, axis=axis)

    def log_softmax(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.log_softmax(x, axis=-1)

    def any(self, x: tf.Tensor) -> bool:
        return bool(tf.reduce_any(x))

    def max_int(self, x: tf.Tensor) -> int:
        return int(tf.reduce_max(x))

    def to_list(self, x: tf.Tensor) -> list:
        return x.numpy().tolist()

    def asarray(self, values: Any, dtype: str) -> tf.Tensor:
        return tf.constant(values, _DTYPES[dtype])
