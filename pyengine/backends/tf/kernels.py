"""The decode step's products on pyengine's C++ kernel, as an XLA custom call (csrc/xla/linear.cpp).

`linear(x, w, bias, weight_kn=False)` is `x @ w.T + bias` for x `[M, K]` and a weight stored `[N, K]`
(the tied embedding, or Conv1D / Dense weights transposed once per generate call), or `x @ w + bias` for
a weight stored `[K, N]` (`weight_kn=True`: the `[in, out]` layer weights as they are). Implementations,
in order of preference:
- `cpp`: the custom call `pyengine_linear` into `pyengine._xla`, for float32 products of up to
  `MAX_ROWS` rows inside `tf.function(jit_compile=True)`. TensorFlow has no Python API to register a
  target: `pyengine_register_tf_target` adds it to the registry TensorFlow's library exports. Outside XLA
  (eager, or a tf.function without jit_compile) TensorFlow has no kernel for the call: `native` runs.
  XLA:CPU multiplies 8 rows by a `[N, K]` weight very slowly: 12 GPT-2-small layers + head took 167 ms
  with `transpose_b`, 20 ms through this call.
- `native`: `tf.matmul(x, w, transpose_b=True)`.
The token choice has the same custom calls as JAX (backends/jax/kernels.py): `top_k_mask`, `top_p_mask`,
`min_p_mask`, `argmax`, `sample_from_scores` run the torch `cpp` ops' row kernels under XLA (`cpp` in the TF backend's op
table, native outside XLA). At batch 8 x 50257 TensorFlow's XLA code took 6.4 ms for a traced top-k (32
bisection passes), 1.8 ms for the draw, 0.9 ms for top-p at 1.0 and 0.6 ms for argmax.
`PYENGINE_IMPL_<OP>=native` forces TensorFlow's own ops. The choice is made once per process.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from pyengine.backends import xla_targets
from pyengine.backends.tf import native, tf
from pyengine.ops.registry import Impl, select
from pyengine.ops.top_logits import TOP_LOGITS_MAX_ROWS

MAX_ROWS = 64  # up to this many rows the C++ kernel beats XLA's dot


def native_linear(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | None = None, weight_kn: bool = False) -> tf.Tensor:
    y = tf.matmul(x, w, transpose_b=not weight_kn)
    return y if bias is None else y + tf.reshape(bias, [-1])


def cpp_linear(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | None = None, weight_kn: bool = False) -> tf.Tensor:
    """`x @ w.T (+ bias)` (`x @ w` with `weight_kn`) through `pyengine_linear` when traced for XLA (float32,
    up to MAX_ROWS rows)."""
    m, k = x.shape
    n = w.shape[1 if weight_kn else 0]
    fits = m is not None and 0 < m <= MAX_ROWS and k is not None and w.shape[0 if weight_kn else 1] == k
    fits = fits and x.dtype == tf.float32 and w.dtype == tf.float32 and (bias is None or bias.dtype == tf.float32)
    if not fits or not in_xla():
        return native_linear(x, w, bias, weight_kn)
    operands = [x, w] if bias is None else [x, w, tf.reshape(bias, [n])]
    config = f"{m} {k} {n} {int(bias is not None)} {int(weight_kn)}"
    return _custom_call("pyengine_linear", operands, config, tf.float32, [m, n])


def attend_cached(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, visible: tf.Tensor, scale: float) -> tf.Tensor | None:
    """One query per row over a cache: softmax attention of q `[B, H, D]` over k, v `[B, H_kv, T, D]` where
    `visible` `[B, T]` (bool) -> `[B, H, D]`, through `pyengine_attend_cached` (the Flax models' decode-step
    attention, csrc/xla/attend_cached.cpp); None outside XLA or without the C++ kernels (callers keep their
    matmul attention).

    Besides reading only the visible slots, it takes the cache as the dynamic-update-slice left it: XLA's
    batched dot wanted the `[B, H, T, D]` cache reshaped, so it wrote each step's keys and values twice and
    copied every layer's cache twice a step (GPT-2-small at batch 1: ~1.5 ms of a 16 ms step).
    """
    b, h, d = q.shape
    hkv, t = k.shape[1], k.shape[2]
    fits = None not in (b, h, d, hkv, t) and h % hkv == 0 and k.shape == v.shape == (b, hkv, t, d)
    fits = fits and q.dtype == k.dtype == v.dtype == tf.float32 and tuple(visible.shape) == (b, t)
    if not fits or linear_impl().label != "cpp" or not in_xla():
        return None
    operands = [q, k, v, tf.cast(visible, tf.uint8)]
    return _custom_call("pyengine_attend_cached", operands, f"{b} {h} {hkv} {t} {d} {float(scale)!r}", tf.float32,
                        [b, h, d])  # fmt: skip


def top_logits(x: tf.Tensor, screen: tuple, w: tf.Tensor, k: Any) -> tf.Tensor:
    """`x @ w.T` `[M, N]` with only each row's `k` largest (ties included) exact and -inf elsewhere, through the
    int8 `screen` (q, scale, slack) of the head `w [N, K]` (`pyengine_top_logits`, csrc/xla/top_logits.cpp);
    `k` may be a traced int32 scalar. Under XLA with the C++ kernels and up to TOP_LOGITS_MAX_ROWS float32
    rows; anywhere else every logit (`linear`)."""
    m, kdim = x.shape
    fits = m is not None and 0 < m <= TOP_LOGITS_MAX_ROWS and kdim is not None and w.shape[1] == kdim
    fits = fits and x.dtype == tf.float32 and w.dtype == tf.float32
    if not fits or linear_impl().label != "cpp" or not in_xla():
        return linear(x, w)
    n = w.shape[0]
    operands = [x, *screen, w, tf.reshape(tf.cast(k, tf.int32), [])]
    return _custom_call("pyengine_top_logits", operands, f"{m} {kdim} {n}", tf.float32, [m, n])


def top_logits_screen(w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None:
    """(q, scale, slack): the int8 screen of a float32 head `w [N, K]` for `top_logits`, built under XLA by
    `pyengine_top_logits_screen` from the weights as they are now; None where `top_logits` would not use it
    (outside XLA, no C++ kernels). A head holding inf or NaN gets non-finite slacks, and `pyengine_top_logits`
    then computes every logit."""
    if linear_impl().label != "cpp" or not in_xla() or w.dtype != tf.float32 or None in w.shape:
        return None
    n, k = w.shape
    return tuple(_custom_call("pyengine_top_logits_screen", [w], f"{n} {k}", [tf.int8, tf.float32, tf.float32],
                              [[n, k], [n], [n]]))  # fmt: skip


def _custom_call(target: str, operands: list, config: str, dtype: Any, shape: list) -> Any:
    """One result (`dtype`, `shape`), or a list of them when `dtype` is a list (and `shape` a list of shapes)."""
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops

    many = isinstance(dtype, list)
    out = gen_xla_ops.xla_custom_call_v2(
        operands=operands, call_target_name=target, backend_config=config, has_side_effect=False,
        result_dtypes=dtype if many else [dtype], result_shapes=shape if many else [shape],
    )  # fmt: skip
    return list(out) if many else out[0]


def _rows_fit(scores: tf.Tensor) -> bool:
    """float32 `[B, V]` of static shape, traced for XLA: what the token-choice targets take."""
    b, v = scores.shape if scores.shape.rank == 2 else (None, None)
    return b is not None and v is not None and b > 0 and v > 0 and scores.dtype == tf.float32 and in_xla()


def _mask_call(target: str, scores: tf.Tensor, value: tf.Tensor, filter_value: Any, min_tokens_to_keep: Any) -> tf.Tensor | None:
    """The custom call of a warper, or None when its arguments need the native op (outside XLA, not float32
    `[B, V]`, a traced min_tokens_to_keep or filter value)."""
    static = isinstance(min_tokens_to_keep, int) and isinstance(filter_value, (int, float))
    if not static or not _rows_fit(scores):
        return None
    b, v = scores.shape
    config = f"{b} {v} {min_tokens_to_keep} {float(filter_value)!r}"
    return _custom_call(target, [scores, tf.reshape(value, [])], config, tf.float32, [b, v])


def cpp_top_k_mask(scores: tf.Tensor, top_k: Any, filter_value: float = native.NEG_INF,
                   min_tokens_to_keep: Any = 1) -> tf.Tensor:  # fmt: skip
    out = _mask_call("pyengine_top_k_mask", scores, tf.cast(top_k, tf.int32), filter_value, min_tokens_to_keep)
    return native.top_k_mask(scores, top_k, filter_value, min_tokens_to_keep) if out is None else out


def cpp_top_p_mask(scores: tf.Tensor, top_p: Any, filter_value: float = native.NEG_INF,
                   min_tokens_to_keep: Any = 1) -> tf.Tensor:  # fmt: skip
    out = _mask_call("pyengine_top_p_mask", scores, tf.cast(top_p, tf.float32), filter_value, min_tokens_to_keep)
    return native.top_p_mask(scores, top_p, filter_value, min_tokens_to_keep) if out is None else out


def cpp_min_p_mask(scores: tf.Tensor, min_p: Any, filter_value: float = native.NEG_INF,
                   min_tokens_to_keep: Any = 1) -> tf.Tensor:  # fmt: skip
    out = _mask_call("pyengine_min_p_mask", scores, tf.cast(min_p, tf.float32), filter_value, min_tokens_to_keep)
    return native.min_p_mask(scores, min_p, filter_value, min_tokens_to_keep) if out is None else out


def cpp_argmax(scores: tf.Tensor) -> tf.Tensor:
    if not _rows_fit(scores):
        return native.argmax(scores)
    b, v = scores.shape
    return _custom_call("pyengine_argmax", [scores], f"{b} {v}", tf.int32, [b])


def cpp_sample_from_scores(scores: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
    if not _rows_fit(scores):
        return native.sample_from_scores(scores, uniform)
    b, v = scores.shape
    operands = [scores, tf.reshape(tf.cast(uniform, tf.float32), [b])]
    return _custom_call("pyengine_sample_from_scores", operands, f"{b} {v}", tf.int32, [b])


def decode_on_cpp() -> bool:
    """Whether a decode step being traced now runs its products on the C++ kernel (chosen, and under XLA):
    then the models hand it weights `[out, in]`, transposed once per generate call."""
    return linear_impl().label == "cpp" and in_xla()


def in_xla() -> bool:
    """True while tracing a function TensorFlow compiles with XLA (`jit_compile=True`)."""
    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # a TensorFlow without these internals: stay on the matmul
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _library_path() -> str:
    return os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")


@functools.cache
def cpp_available() -> str | None:
    """None once the `pyengine._xla` targets are registered with TensorFlow's XLA, else why they are not."""
    reason = xla_targets.available()
    if reason is not None:
        return reason
    for name in xla_targets.TARGETS:
        code = xla_targets.library().pyengine_register_tf_target(
            _library_path().encode(), name.encode(), xla_targets.address(name))
        if code != 0:
            why = {1: "is not loaded", 2: "does not export XLA's custom-call registry"}.get(code, f"failed ({code})")
            return f"TensorFlow's {_library_path()} {why}"
    return None


LINEAR = [Impl("cpp", cpp_linear, available=cpp_available), Impl("native", native_linear)]


@functools.cache
def linear_impl() -> Impl:
    """The chosen implementation of `linear` (once per process)."""
    return select("linear", LINEAR)


def linear(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | None = None, weight_kn: bool = False) -> tf.Tensor:
    """`x @ w.T + bias`: x `[M, K]`, w `[N, K]` (or `[K, N]` with `weight_kn`), bias `[N]` (or `[1, N]`) or
    None -> `[M, N]`."""
    return linear_impl().fn(x, w, bias, weight_kn)
