"""The decode step's products and attention on pyengine's C++ kernels, as XLA custom calls (csrc/xla/).

`linear(x, w, bias, weight_kn=False)` is `x @ w.T + bias` for x `[M, K]` and a weight stored `[N, K]`
(GPT-2's Conv1D kernels and the tied embedding in transformers' Flax layout), or `x @ w + bias` for a
weight stored `[K, N]` (`weight_kn=True`: Flax's Dense kernels). Implementations, in order of preference:
- `cpp`: the custom call `pyengine_linear` into `pyengine._xla`, for float32 products of up to
  `MAX_ROWS` rows on JAX's CPU backend (a decode step: one row per sequence). XLA:CPU's dot emitter
  streams the weights slowly at few rows: 12 GPT-2-small layers + head took 37.4 ms at 8 rows under
  `jax.jit`, 22.9 ms through this call (`benchmarks/generate/flax_generate.py` measures the whole loop).
  Bigger products (prefill) and other dtypes go to `native`.
- `native`: `lax.dot_general`, computing `w @ x.T` for 2 to 32 rows (XLA:CPU streams the weights about
  twice as fast in that orientation at 8 rows).

`attend_cached(q, k, v, visible, scale)`: one query per row over the `[B, H_kv, T, D]` cache
(backends/jax/functional.py), only the visible slots. `cpp`: the custom call `pyengine_attend_cached`
(float32); `native`: the two einsums over every slot (`functional.attend`). At batch 8 the einsums made a
GPT-2-small step cost ~0.07 ms more per cache slot.

`top_k_mask` / `top_p_mask` / `min_p_mask` (the sampling warpers, same arguments as `native.py`): `cpp` runs the row
kernels the torch `cpp` ops run (csrc/include/pyengine/masks.h) through `pyengine_top_k_mask` /
`pyengine_top_p_mask` / `pyengine_min_p_mask`, with the value as an array input (a new value does not
recompile). XLA needs 32 bisection passes for a traced top_k and a full sort for top_p (and for min_p's
min_tokens_to_keep): at batch 8 x 50257, ~5 ms of a sampling step.
`argmax` / `sample_from_scores` (the token choice): `cpp` runs the row kernels of the torch `cpp` ops
(sampling.h, fused.h) through `pyengine_argmax` / `pyengine_sample_from_scores`: one pass for the maximum,
one for exp and the walk over the mass. XLA took 0.77 / 3.0 ms at batch 8 x 50257 (softmax, cumsum, count).
These five sit in the JAX backend's op table (backend.py) ahead of `native`.

`PYENGINE_IMPL_<OP>=native` (LINEAR, ATTEND_CACHED, TOP_K_MASK, TOP_P_MASK, MIN_P_MASK, ARGMAX, SAMPLE_FROM_SCORES) forces
XLA's own code. The choices are made once per process, at the first trace.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from pyengine.backends import xla_targets
from pyengine.backends.jax import functional as F
from pyengine.backends.jax import native
from pyengine.ops.registry import Impl, select
from pyengine.ops.top_logits import TOP_LOGITS_MAX_ROWS

Array = Any
MAX_ROWS = 64  # up to this many rows the C++ kernel beats XLA's dot (measured at 1, 8, 32)
SMALL_ROWS = 32  # native: up to this many rows `w @ x.T` streams the weights faster


def native_linear(x: Array, w: Array, bias: Array | None = None, weight_kn: bool = False) -> Array:
    """`x @ w.T (+ bias)` with XLA's dot, always a 2-D dot contracting `w`'s second axis: XLA:CPU fuses
    a 3-D dot with a transposed kernel plus bias into a slow loop (about 30x slower per decode step). For
    2-32 rows it computes `w @ x.T` `[N, M]` and transposes that small result (0.5 vs 1.3 ms for the
    3072x768 MLP kernel at 8 rows); the barrier keeps XLA from folding the transpose back into the dot."""
    if weight_kn:
        y = lax.dot_general(x, w, (((1,), (0,)), ((), ())))
        return y if bias is None else y + bias
    dims = (((1,), (1,)), ((), ()))
    if x.shape[0] > SMALL_ROWS or x.shape[0] == 1:
        y = lax.dot_general(x, w, dims)
    else:
        y = lax.optimization_barrier(lax.dot_general(w, x, dims)).T
    return y if bias is None else y + bias


def cpp_linear(x: Array, w: Array, bias: Array | None = None, weight_kn: bool = False) -> Array:
    """`x @ w.T (+ bias)` (`x @ w` with `weight_kn`) through the `pyengine_linear` custom call (float32, up
    to MAX_ROWS rows)."""
    (m, k), n = x.shape, w.shape[1 if weight_kn else 0]
    f32 = jnp.dtype(jnp.float32)
    fits = 0 < m <= MAX_ROWS and x.dtype == f32 and w.dtype == f32 and (bias is None or bias.dtype == f32)
    if not fits or w.ndim != 2 or w.shape[0 if weight_kn else 1] != k or (bias is not None and bias.shape != (n,)):
        return native_linear(x, w, bias, weight_kn)
    call = jax.ffi.ffi_call("pyengine_linear", jax.ShapeDtypeStruct((m, n), jnp.float32),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{m} {k} {n} {int(bias is not None)} {int(weight_kn)}")  # fmt: skip
    return call(x, w) if bias is None else call(x, w, bias)


@functools.cache
def cpp_available() -> str | None:
    """None once `pyengine_linear` is registered with JAX's CPU backend, else why it is not."""
    reason = xla_targets.available()
    if reason is not None:
        return reason
    if jax.default_backend() != "cpu":
        return f"the XLA kernels are CPU code and JAX runs on {jax.default_backend()}"
    for name in xla_targets.TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(xla_targets.address(name)), platform="cpu", api_version=0)
    return None


def native_attend_cached(q: Array, k: Array, v: Array, visible: Array, scale: float) -> Array:
    """Softmax attention of q `[B, H, D]` over k, v `[B, H_kv, T, D]` where `visible` `[B, T]`: the models'
    `functional.attend` for one query (a row with no visible slot averages every value)."""
    out, _ = F.attend(q[:, None], k, v, visible[:, None, None, :], scale, heads_first=True)  # [B, 1, H, D]
    return out[:, 0]


def cpp_attend_cached(q: Array, k: Array, v: Array, visible: Array, scale: float) -> Array:
    """`native_attend_cached` through the `pyengine_attend_cached` custom call (float32)."""
    (b, h, d), (t, hkv) = q.shape, (k.shape[2], k.shape[1])
    f32 = jnp.dtype(jnp.float32)
    fits = q.dtype == f32 and k.dtype == f32 and v.dtype == f32 and k.shape == v.shape == (b, hkv, t, d)
    if not fits or h % hkv or visible.shape != (b, t):
        return native_attend_cached(q, k, v, visible, scale)
    call = jax.ffi.ffi_call("pyengine_attend_cached", jax.ShapeDtypeStruct((b, h, d), jnp.float32),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{b} {h} {hkv} {t} {d} {float(scale)!r}")  # fmt: skip
    return call(q, k, v, visible.astype(jnp.uint8))


def _mask_call(target: str, scores: Array, value: Array, filter_value: Any, min_tokens_to_keep: Any) -> Array | None:
    """The custom call of a warper, or None when its arguments need the native op (not float32 [B, V], a
    traced min_tokens_to_keep or filter value)."""
    static = isinstance(min_tokens_to_keep, int) and isinstance(filter_value, (int, float))
    if not static or scores.ndim != 2 or scores.dtype != jnp.dtype(jnp.float32) or 0 in scores.shape:
        return None
    b, v = scores.shape
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((b, v), jnp.float32),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{b} {v} {min_tokens_to_keep} {float(filter_value)!r}")  # fmt: skip
    return call(scores, value)


def cpp_top_k_mask(scores: Array, top_k: Any, filter_value: float = -float("inf"), min_tokens_to_keep: Any = 1) -> Array:
    out = _mask_call("pyengine_top_k_mask", scores, jnp.asarray(top_k, jnp.int32), filter_value, min_tokens_to_keep)
    return native.top_k_mask(scores, top_k, filter_value, min_tokens_to_keep) if out is None else out


def cpp_top_p_mask(scores: Array, top_p: Any, filter_value: float = -float("inf"), min_tokens_to_keep: Any = 1) -> Array:
    out = _mask_call("pyengine_top_p_mask", scores, jnp.asarray(top_p, jnp.float32), filter_value, min_tokens_to_keep)
    return native.top_p_mask(scores, top_p, filter_value, min_tokens_to_keep) if out is None else out


def cpp_min_p_mask(scores: Array, min_p: Any, filter_value: float = -float("inf"), min_tokens_to_keep: Any = 1) -> Array:
    out = _mask_call("pyengine_min_p_mask", scores, jnp.asarray(min_p, jnp.float32), filter_value, min_tokens_to_keep)
    return native.min_p_mask(scores, min_p, filter_value, min_tokens_to_keep) if out is None else out


def _select_call(target: str, scores: Array, *extra: Array) -> Array | None:
    """The custom call choosing one token per row, or None when the scores are not float32 [B, V]."""
    if scores.ndim != 2 or scores.dtype != jnp.dtype(jnp.float32) or 0 in scores.shape:
        return None
    b, v = scores.shape
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((b,), jnp.int32),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{b} {v}")  # fmt: skip
    return call(scores, *extra)


def cpp_argmax(scores: Array) -> Array:
    out = _select_call("pyengine_argmax", scores)
    return native.argmax(scores) if out is None else out


def cpp_sample_from_scores(scores: Array, uniform: Array) -> Array:
    out = _select_call("pyengine_sample_from_scores", scores, jnp.asarray(uniform, jnp.float32))
    return native.sample_from_scores(scores, uniform) if out is None else out


LINEAR = [Impl("cpp", cpp_linear, available=cpp_available), Impl("native", native_linear)]
ATTEND_CACHED = [Impl("cpp", cpp_attend_cached, available=cpp_available), Impl("native", native_attend_cached)]


@functools.cache
def linear_impl() -> Impl:
    """The chosen implementation of `linear` (once per process)."""
    return select("linear", LINEAR)


def linear(x: Array, w: Array, bias: Array | None = None, weight_kn: bool = False) -> Array:
    """`x @ w.T + bias`: x `[M, K]`, w `[N, K]` (or `[K, N]` with `weight_kn`), bias `[N]` or None -> `[M, N]`."""
    return linear_impl().fn(x, w, bias, weight_kn)


@functools.cache
def attend_cached_impl() -> Impl:
    """The chosen implementation of `attend_cached` (once per process)."""
    return select("attend_cached", ATTEND_CACHED)


def attend_cached(q: Array, k: Array, v: Array, visible: Array, scale: float) -> Array:
    """One query per row: q `[B, H, D]`, k/v `[B, H_kv, T, D]`, visible `[B, T]` bool -> `[B, H, D]`."""
    return attend_cached_impl().fn(q, k, v, visible, scale)


def top_logits_screen(w: Array) -> tuple[Array, Array, Array] | None:
    """(q, scale, slack): the int8 screen of a float32 head `w [N, K]` for `top_logits`, built by the custom call
    `pyengine_top_logits_screen` (csrc/xla/top_logits.cpp) from the weights as they are in this call; None
    where `top_logits` would not use it (no C++ kernels, another dtype). A head holding inf or NaN gets
    non-finite slacks, and `pyengine_top_logits` then computes every logit."""
    if linear_impl().label != "cpp" or w.dtype != jnp.dtype(jnp.float32) or w.ndim != 2:
        return None
    n, k = w.shape
    call = jax.ffi.ffi_call("pyengine_top_logits_screen",
                            (jax.ShapeDtypeStruct((n, k), jnp.int8), jax.ShapeDtypeStruct((n,), jnp.float32),
                             jax.ShapeDtypeStruct((n,), jnp.float32)),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{n} {k}")  # fmt: skip
    return tuple(call(w))


def top_logits(x: Array, screen: tuple | None, w: Array, k: Any) -> Array:
    """`x @ w.T` `[M, N]` with only each row's `k` largest (ties included) exact and -inf elsewhere, through the
    int8 `screen` of the head `w [N, K]` (`pyengine_top_logits`; `k` may be a traced int32 scalar). Without a
    screen, past TOP_LOGITS_MAX_ROWS rows or for another dtype: every logit (`linear`)."""
    m, kdim = x.shape
    f32 = jnp.dtype(jnp.float32)
    fits = screen is not None and 0 < m <= TOP_LOGITS_MAX_ROWS and w.shape[1] == kdim
    if not fits or x.dtype != f32 or w.dtype != f32:
        return linear(x, w)
    n = w.shape[0]
    call = jax.ffi.ffi_call("pyengine_top_logits", jax.ShapeDtypeStruct((m, n), jnp.float32),
                            custom_call_api_version=xla_targets.STATUS_RETURNING_UNIFIED,
                            legacy_backend_config=f"{m} {kdim} {n}")  # fmt: skip
    return call(x, *screen, w, jnp.asarray(k, jnp.int32).reshape(()))
