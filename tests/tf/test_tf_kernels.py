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
    if kernels._cpp_available() is not None:
        pytest.skip(kernels._cpp_available())

    def ops(jit: bool, m: int = 4) -> set[str]:
        spec = (tf.TensorSpec([m, 16], tf.float32), tf.TensorSpec([8, 16], tf.float32))
        graph = tf.function(kernels.cpp_linear, jit_compile=jit).get_concrete_function(*spec).graph
        return {op.type for op in graph.get_operations()}

    assert "XlaCustomCallV2" in ops(True)
    assert "XlaCustomCallV2" not in ops(False)  # a plain tf.function has no kernel for it
    assert "XlaCustomCallV2" not in ops(True, kernels.MAX_ROWS + 1)
