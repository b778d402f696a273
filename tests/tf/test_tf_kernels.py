"""`linear` on TensorFlow: the C++ custom call (`cpp`, under jit_compile) and tf.matmul (`native`)
against the NumPy reference. Outside XLA the `cpp` impl must fall back to the matmul (TensorFlow has no
kernel for a custom call there)."""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.backends.tf import kernels, tf
from pyengine.ops.registry import Impl

SHAPES = [(1, 768, 2304), (3, 100, 77), (8, 768, 3072), (64, 64, 200), (65, 48, 96)]


def _reference(x, w, bias):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if bias is None else y + bias


@pytest.mark.parametrize("impl", kernels.LINEAR, ids=lambda i: i.label)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", ["xla", "eager"])
@pytest.mark.parametrize("weight_kn", [False, True], ids=["nk", "kn"])
def test_linear_matches_reference(impl: Impl, shape, mode, weight_kn, rng):
    reason = impl.available()
    if reason is not None:
        pytest.skip(reason)
    m, k, n = shape
    x = tf.constant(rng.standard_normal((m, k)).astype(np.float32))
    w = tf.constant(rng.standard_normal((n, k)).astype(np.float32))
    bias = rng.standard_normal((1, n)).astype(np.float32)
    stored = tf.transpose(w) if weight_kn else w  # [K, N] or [N, K]
    fn = tf.function(impl.fn, jit_compile=True) if mode == "xla" else impl.fn
    out = fn(x, stored, tf.constant(bias), weight_kn).numpy()
    assert out.shape == (m, n)
    np.testing.assert_allclose(out, _reference(x.numpy(), w.numpy(), bias[0]), rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_cpp_linear_is_a_custom_call_only_under_xla():
    if kernels.cpp_available() is not None:
        pytest.skip(kernels.cpp_available())

    def ops(jit: bool, m: int = 4) -> set[str]:
        spec = (tf.TensorSpec([m, 16], tf.float32), tf.TensorSpec([8, 16], tf.float32))
        graph = tf.function(kernels.cpp_linear, jit_compile=jit).get_concrete_function(*spec).graph
        return {op.type for op in graph.get_operations()}

    assert "XlaCustomCallV2" in ops(True)
    assert "XlaCustomCallV2" not in ops(False)  # a plain tf.function has no kernel for it
    assert "XlaCustomCallV2" not in ops(True, kernels.MAX_ROWS + 1)


def _choice_scores(batch: int, vocab: int, seed: int) -> np.ndarray:
    s = np.random.default_rng(seed).normal(size=(batch, vocab)).astype(np.float32) * 3
    if batch > 2:
        s[1] = -np.inf  # every token banned ...
        s[1, 2] = 0.0  # ... but one
        s[2] = 0.5  # all equal
    if batch > 3:
        s[3, : vocab // 2] = -np.inf  # half banned
    return s


@pytest.mark.parametrize("shape", [(1, 7), (4, 111), (8, 50257)], ids=str)
def test_warpers_and_token_choice_match_reference_under_xla(shape):
    """The TF backend's impls of the warpers, argmax and sample_from_scores (the custom calls
    first), compiled with XLA, against the NumPy reference; values are traced, so one compilation serves all."""
    from pyengine.backends.tf.backend import OPS
    from pyengine.ops import sampling as ref

    scores = _choice_scores(*shape, seed=shape[1])
    noise = np.random.default_rng(shape[1]).random((8, shape[0])).astype(np.float32)
    noise[0], noise[1] = 0.0, np.nextafter(np.float32(1), np.float32(0))
    warpers = {"top_k_mask": [1, 5, 50, shape[1] + 3], "top_p_mask": [0.0, 0.3, 0.9, 1.0],
               "min_p_mask": [0.0, 0.05, 0.3, 1.0]}
    for op, values in warpers.items():
        for impl in OPS[op]:
            if impl.available() is not None:
                continue
            for keep in (1, 3):
                fn = tf.function(lambda s, v, impl=impl, keep=keep: impl.fn(s, v, -np.inf, keep), jit_compile=True)
                for value in values:
                    want = getattr(ref, op)(scores, value, -np.inf, keep)
                    got = fn(tf.constant(scores), tf.constant(value)).numpy()
                    np.testing.assert_array_equal(got, want, err_msg=f"{op} {impl.label} {value} {keep}")
    for impl in OPS["argmax"]:
        if impl.available() is None:
            got = tf.function(impl.fn, jit_compile=True)(tf.constant(scores)).numpy()
            np.testing.assert_array_equal(got, ref.argmax(scores), err_msg=impl.label)
    for impl in OPS["sample_from_scores"]:
        if impl.available() is not None:
            continue
        fn = tf.function(impl.fn, jit_compile=True)
        for u in noise:
            got = fn(tf.constant(scores), tf.constant(u)).numpy()
            np.testing.assert_array_equal(got, ref.sample_from_scores(scores, u), err_msg=f"{impl.label} u={u}")


def test_token_choice_is_a_custom_call_only_under_xla():
    if kernels.cpp_available() is not None:
        pytest.skip(kernels.cpp_available())

    def ops(jit: bool) -> set[str]:
        spec = (tf.TensorSpec([2, 16], tf.float32), tf.TensorSpec([2], tf.float32))
        fn = tf.function(lambda s, u: (kernels.cpp_argmax(s), kernels.cpp_sample_from_scores(s, u)), jit_compile=jit)
        return {op.type for op in fn.get_concrete_function(*spec).graph.get_operations()}

    assert "XlaCustomCallV2" in ops(True)
    assert "XlaCustomCallV2" not in ops(False)


@pytest.mark.parametrize("rows", [1, 5, 16])
def test_top_logits_under_xla_keeps_every_top_logit(rows, rng):
    """The screened head (`top_logits` over `top_logits_screen`, built in the same compiled function): every
    logit at least the row's k-th largest is kept, at the full product's value, the rest -inf; k is a traced
    value; k past 1024 or a head with a NaN gets every logit."""
    if kernels.linear_impl().label != "cpp":
        pytest.skip("the C++ XLA targets are unavailable")
    n, kdim = 3001, 96
    w_np = (rng.standard_normal((n, kdim)) * 0.05).astype(np.float32)
    x_np = (rng.standard_normal((rows, kdim)) * 2).astype(np.float32)
    exact = x_np.astype(np.float64) @ w_np.astype(np.float64).T

    @tf.function(jit_compile=True)
    def screened(x, w, k):
        screen = kernels.top_logits_screen(w)
        return kernels.top_logits(x, screen, w, k)

    for k in (1, 7, 50):
        out = screened(tf.constant(x_np), tf.constant(w_np), tf.constant(k)).numpy()
        finite = np.isfinite(out)
        assert finite.sum() < rows * n // 4  # screened, not the full product
        kth = np.sort(exact, axis=1)[:, -k][:, None]
        assert finite[exact >= kth - 1e-4].all()  # every top-k logit (and any within rounding of the k-th)
        np.testing.assert_allclose(out[finite], exact[finite], rtol=1e-5, atol=1e-5)
        assert (out[~finite] == -np.inf).all()
    full = screened(tf.constant(x_np), tf.constant(w_np), tf.constant(2000)).numpy()
    np.testing.assert_allclose(full, exact, rtol=1e-5, atol=1e-5)
    w_nan = w_np.copy()
    w_nan[4, 2] = np.nan
    out = screened(tf.constant(x_np), tf.constant(w_nan), tf.constant(1)).numpy()
    assert np.isnan(out[:, 4]).all() and np.isfinite(np.delete(out, 4, axis=1)).all()  # computed in full
    outside = kernels.top_logits(tf.constant(x_np), None, tf.constant(w_np), 1).numpy()  # eager: every logit
    np.testing.assert_allclose(outside, exact, rtol=1e-5, atol=1e-5)
    assert kernels.top_logits_screen(tf.constant(w_np)) is None  # no screen outside XLA


def test_attend_cached_under_xla_matches_softmax_attention(rng):
    """One query per row over the cache, only the visible slots (grouped kv heads too); None outside XLA."""
    if kernels.linear_impl().label != "cpp":
        pytest.skip("the C++ XLA targets are unavailable")
    b, h, hkv, t, d = 3, 4, 2, 11, 16
    q = rng.standard_normal((b, h, d)).astype(np.float32)
    k = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, t, d)).astype(np.float32)
    visible = rng.random((b, t)) < 0.6
    visible[:, -1] = True
    attend = tf.function(lambda *a: kernels.attend_cached(*a, 0.3), jit_compile=True)
    out = attend(tf.constant(q), tf.constant(k), tf.constant(v), tf.constant(visible)).numpy()
    kk, vv = np.repeat(k, h // hkv, axis=1), np.repeat(v, h // hkv, axis=1)  # [B, H, T, D]
    scores = np.einsum("bhd,bhtd->bht", q.astype(np.float64), kk) * 0.3
    scores = np.where(visible[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bht,bhtd->bhd", probs, vv), rtol=1e-5, atol=1e-5)
    assert kernels.attend_cached(tf.constant(q), tf.constant(k), tf.constant(v), tf.constant(visible), 0.3) is None
