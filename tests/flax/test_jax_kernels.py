"""`linear` on JAX: the C++ custom call (`cpp`) and XLA's dot (`native`) against the NumPy reference.

Shapes cover the kernel's paths: 1-3 rows (one row block), 4-8 (4x4 blocks plus leftovers), 64 (the
largest the custom call takes), 65 (handed to XLA's dot), K and N not multiples of 16 / 64 (masked tails).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyengine.backends.jax import kernels
from pyengine.ops.registry import Impl

SHAPES = [(1, 768, 2304), (3, 100, 77), (8, 768, 3072), (5, 33, 130), (64, 64, 200), (65, 48, 96)]


def _reference(x, w, bias):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if bias is None else y + bias


@pytest.mark.parametrize("impl", kernels.LINEAR, ids=lambda i: i.label)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("weight_kn", [False, True], ids=["nk", "kn"])
def test_linear_matches_reference(impl: Impl, shape, with_bias, weight_kn, rng):
    reason = impl.available()
    if reason is not None:
        pytest.skip(reason)
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    stored = np.ascontiguousarray(w.T) if weight_kn else w  # [K, N] or [N, K]
    out = jax.jit(impl.fn, static_argnums=3)(x, stored, bias, weight_kn)
    assert out.shape == (m, n) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), _reference(x, w, bias), rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_cpp_linear_is_a_custom_call_only_where_it_applies(rng):
    """Up to MAX_ROWS float32 rows the product is the custom call; more rows or bf16 go to XLA's dot."""
    if kernels.cpp_available() is not None:
        pytest.skip(kernels.cpp_available())

    def hlo(m, dtype=jnp.float32):
        x = jnp.zeros((m, 16), dtype)
        w = jnp.zeros((32, 16), dtype)
        return jax.jit(kernels.cpp_linear).lower(x, w).as_text()

    assert "pyengine_linear" in hlo(1) and "pyengine_linear" in hlo(kernels.MAX_ROWS)
    assert "pyengine_linear" not in hlo(kernels.MAX_ROWS + 1)
    assert "pyengine_linear" not in hlo(8, jnp.bfloat16)


def test_forced_native_never_emits_the_custom_call(monkeypatch):
    monkeypatch.setenv("PYENGINE_IMPL_LINEAR", "native")
    kernels.linear_impl.cache_clear()
    try:
        assert kernels.linear_impl().label == "native"
        text = jax.jit(kernels.linear).lower(jnp.zeros((4, 16)), jnp.zeros((8, 16))).as_text()
        assert "pyengine_linear" not in text
    finally:
        kernels.linear_impl.cache_clear()


def _reference_attend(q, k, v, visible, scale):
    """float64 softmax attention of q [B, H, D] over the visible slots of k/v [B, Hkv, T, D]."""
    groups = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, groups, axis=1).astype(np.float64), np.repeat(v, groups, axis=1).astype(np.float64)
    scores = np.einsum("bhd,bhtd->bht", q.astype(np.float64), k) * scale
    scores = np.where(visible[:, None, :], scores, -np.inf)
    none = ~visible.any(axis=1)
    scores[none] = 0.0  # no visible slot: every slot weighs the same
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return np.einsum("bht,bhtd->bhd", probs, v)


@pytest.mark.parametrize("impl", kernels.ATTEND_CACHED, ids=lambda i: i.label)
@pytest.mark.parametrize("shape", [(1, 4, 4, 9, 16), (3, 12, 12, 96, 64), (2, 8, 2, 33, 24)], ids=str)
def test_attend_cached_matches_reference(impl: Impl, shape, rng):
    """Left padding (hidden leading slots), slots past the current length, grouped kv heads (8 / 2), and a
    row with no visible slot at all."""
    reason = impl.available()
    if reason is not None:
        pytest.skip(reason)
    b, h, hkv, t, d = shape
    q = rng.standard_normal((b, h, d)).astype(np.float32)
    k = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    visible = np.zeros((b, t), bool)
    for row in range(b):
        visible[row, row : max(row + 1, t - 3 * row - 1)] = True  # row r: r pad slots, unwritten tail
    if b > 2:
        visible[2] = False
    out = jax.jit(impl.fn, static_argnums=4)(q, k, v, visible, d**-0.5)
    assert out.shape == (b, h, d)
    np.testing.assert_allclose(np.asarray(out), _reference_attend(q, k, v, visible, d**-0.5), rtol=1e-5, atol=2e-5)


def _warper_scores(batch: int, vocab: int, seed: int) -> np.ndarray:
    s = np.random.default_rng(seed).normal(size=(batch, vocab)).astype(np.float32) * 3
    if batch > 2:
        s[1] = -np.inf  # every token banned
        s[1, 2] = 0.0  # ... but one
        s[2] = 0.5  # all equal
    if batch > 3:
        s[3, : vocab // 2] = -np.inf  # half banned
    return s


@pytest.mark.parametrize("op", ["top_k_mask", "top_p_mask", "min_p_mask"])
@pytest.mark.parametrize("shape", [(1, 7), (4, 111), (8, 50257)], ids=str)
def test_warper_impls_match_reference(op, shape):
    """Every JAX impl of the warpers (the custom call first) against the NumPy reference, the value traced."""
    from pyengine.backends.jax.backend import OPS
    from pyengine.ops import sampling as ref_sampling

    scores = _warper_scores(*shape, seed=shape[1])
    values = {"top_k_mask": [1, 5, 50, shape[1] + 3], "top_p_mask": [0.0, 0.3, 0.9, 1.0],
              "min_p_mask": [0.0, 0.05, 0.3, 1.0]}[op]
    for impl in OPS[op]:
        if impl.available() is not None:
            continue
        fn = jax.jit(lambda s, v, keep, impl=impl: impl.fn(s, v, -np.inf, keep), static_argnums=2)
        for value in values:
            for keep in (1, 3):
                want = getattr(ref_sampling, op)(scores, value, -np.inf, keep)
                np.testing.assert_array_equal(np.asarray(fn(scores, value, keep)), want, err_msg=f"{impl.label} {value} {keep}")


@pytest.mark.parametrize("shape", [(1, 7), (4, 111), (8, 50257)], ids=str)
def test_token_choice_impls_match_reference(shape):
    """argmax and the inverse-CDF draw, every JAX impl (the custom call first) against the NumPy reference:
    banned rows, ties, half-banned rows, NaN rows, and noise at 0, near 1 and between."""
    from pyengine.backends.jax.backend import OPS
    from pyengine.ops import sampling as ref_sampling

    scores = _warper_scores(*shape, seed=shape[1] + 1)
    if shape[0] > 3:
        scores[0, 3] = np.nan  # a NaN row
    for impl in OPS["argmax"]:
        if impl.available() is None:
            got = np.asarray(jax.jit(impl.fn)(scores))
            np.testing.assert_array_equal(got, ref_sampling.argmax(scores), err_msg=impl.label)
    finite = np.where(np.isnan(scores), 0.0, scores).astype(np.float32)
    noise = np.random.default_rng(shape[1]).random((20, shape[0])).astype(np.float32)
    noise[0], noise[1] = 0.0, np.nextafter(np.float32(1), np.float32(0))
    for impl in OPS["sample_from_scores"]:
        if impl.available() is not None:
            continue
        fn = jax.jit(impl.fn)
        for u in noise:
            want = ref_sampling.sample_from_scores(finite, u)
            np.testing.assert_array_equal(np.asarray(fn(finite, u)), want, err_msg=f"{impl.label} u={u}")
        if impl.label == "cpp" and shape[0] > 3:  # a NaN row draws 0, as the reference's NaN softmax does
            with np.errstate(invalid="ignore"):
                want = ref_sampling.sample_from_scores(scores, noise[2])
            np.testing.assert_array_equal(np.asarray(fn(scores, noise[2])), want)


def test_without_the_library_native_runs_and_cpp_says_why(monkeypatch):
    """pyengine._xla missing (simulated): the automatic choice is XLA's own code; forcing cpp names the reason."""
    import warnings

    from pyengine.backends import xla_targets
    from pyengine.ops.registry import select

    monkeypatch.setattr(xla_targets, "_state", {"reason": "simulated: pyengine._xla is not built"})
    kernels.cpp_available.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert select("linear", kernels.LINEAR).label == "native"
        x, w = np.ones((2, 16), np.float32), np.ones((8, 16), np.float32)
        np.testing.assert_allclose(np.asarray(select("linear", kernels.LINEAR).fn(x, w)), x @ w.T)
        monkeypatch.setenv("PYENGINE_IMPL_LINEAR", "cpp")
        with pytest.raises(RuntimeError, match="simulated: pyengine._xla is not built"):
            select("linear", kernels.LINEAR)
    finally:
        kernels.cpp_available.cache_clear()


def test_concurrent_calls_share_the_team_safely(rng):
    """Two threads running custom calls at once: the targets' fork-join team (csrc/xla/team.h) serves one
    call at a time and every result is still the reference's."""
    import threading

    if kernels.cpp_available() is not None:
        pytest.skip(kernels.cpp_available())
    fn = jax.jit(kernels.cpp_linear)
    cases = [(rng.standard_normal((m, 256)).astype(np.float32), rng.standard_normal((1024, 256)).astype(np.float32))
             for m in (1, 8)]  # fmt: skip
    errors: list[BaseException] = []

    def work(x, w):
        try:
            for _ in range(30):
                np.testing.assert_allclose(np.asarray(fn(x, w)), _reference(x, w, None), rtol=1e-5, atol=2e-3)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=case) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
