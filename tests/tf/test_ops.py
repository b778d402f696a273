"""The TF native ops against the NumPy reference (pyengine/ops/), eager and under XLA.

Odd shapes, -inf rows, all-equal rows, and compiled-loop histories holding -1 past the current length.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.backends.tf import native, tf
from pyengine.backends.tf.backend import TFBackend
from pyengine.ops import logits as ref_logits
from pyengine.ops import sampling as ref_sampling

SHAPES = [(1, 7), (3, 111)]  # history ops (one XLA compilation per op and shape: keep it short)
WARPER_SHAPES = [(3, 111), (5, 1031)]


def _scores(rng, batch, vocab, special=True):
    s = rng.standard_normal((batch, vocab)).astype(np.float32)
    if special and batch >= 3:
        s[1] = -np.inf  # a fully banned row
        s[1, 3 % vocab] = 0.5
        s[2] = 0.25  # all equal
    return s


def _history(rng, batch, vocab, length, total):
    """(eager history [B, length], compiled buffer [B, total] with -1 past `length`)."""
    hist = rng.integers(0, min(vocab, 5), (batch, length))  # few ids: repeats and n-gram hits
    buf = np.full((batch, total), -1, dtype=np.int64)
    buf[:, :length] = hist
    return hist, buf


def _both(fn, *args, xla=True):
    """The op run eagerly and (xla=True) under tf.function(jit_compile=True); tensors for array arguments."""
    targs = [tf.constant(a) if isinstance(a, np.ndarray) else a for a in args]
    eager = fn(*targs).numpy()
    compiled = tf.function(lambda *a: fn(*a), jit_compile=True)(*targs).numpy() if xla else eager
    return eager, compiled


def _check(expected, eager, compiled):
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1.3e-6)
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1.3e-6)


@pytest.mark.parametrize("batch,vocab", SHAPES)
def test_history_ops_match_reference(rng, batch, vocab):
    scores = _scores(rng, batch, vocab)
    hist, buf = _history(rng, batch, vocab, length=6, total=9)
    for tokens in (hist, buf):  # XLA compilations are slow: compile the compiled-loop buffer case only
        xla = tokens is buf
        _check(ref_logits.repetition_penalty(scores, tokens, 1.3),
               *_both(native.repetition_penalty, scores, tokens, 1.3, xla=xla))
        for n in (1, 3, 7):
            _check(ref_logits.no_repeat_ngram(scores, tokens, n), *_both(native.no_repeat_ngram, scores, tokens, n, xla=xla))
        words = [[1], [int(hist[0, -1]), 2], [0, 1, 3 % vocab], [4 % vocab, 4 % vocab, 4 % vocab, 4 % vocab, 4 % vocab,
                                                              4 % vocab, 4 % vocab, 0]]
        _check(ref_logits.bad_words(scores, tokens, words), *_both(native.bad_words, scores, tokens, words, xla=xla))
        for min_len in (5, 6, 7):
            _check(ref_logits.min_length(scores, tokens, min_len, [0, vocab - 1]),
                   *_both(native.min_length, scores, tokens, min_len, [0, vocab - 1], xla=xla))
        for at_len in (6, 7):
            _check(ref_logits.forced_token(scores, tokens, at_len, [vocab - 1]),
                   *_both(native.forced_token, scores, tokens, at_len, [vocab - 1], xla=xla))


@pytest.mark.parametrize("batch,vocab", WARPER_SHAPES)
def test_warpers_match_reference(rng, batch, vocab):
    scores = _scores(rng, batch, vocab)
    _check(ref_logits.temperature(scores, 0.7), *_both(native.temperature, scores, 0.7))
    with_nan = scores.copy()
    with_nan[0, 0], with_nan[-1, -1] = np.nan, np.inf
    _check(ref_logits.inf_nan_remove(with_nan), *_both(native.inf_nan_remove, with_nan))
    for k, keep in ((1, 1), (3, 1), (5, 4), (vocab + 10, 1)):
        _check(ref_sampling.top_k_mask(scores, k, -np.inf, keep), *_both(native.top_k_mask, scores, k, -np.inf, keep))
    for p, keep in ((0.1, 1), (0.8, 1), (0.95, 3), (1.0, 1), (1.0, 2)):
        _check(ref_sampling.top_p_mask(scores, p, -np.inf, keep), *_both(native.top_p_mask, scores, p, -np.inf, keep))
    for p, keep in ((0.05, 1), (0.5, 2)):
        _check(ref_sampling.min_p_mask(scores, p, -np.inf, keep), *_both(native.min_p_mask, scores, p, -np.inf, keep))
    np.testing.assert_array_equal(_both(native.argmax, scores)[1], ref_sampling.argmax(scores))


def test_traced_values_share_one_compilation(rng):
    """Sampling values passed as tensors: new values, same trace (no recompilation), right results."""
    scores = _scores(rng, 3, 111)
    fn = tf.function(lambda s, t, k, p: native.top_p_mask(native.top_k_mask(native.temperature(s, t), k), p),
                     jit_compile=True)
    for t, k, p in ((0.7, 5, 0.9), (1.3, 40, 0.5)):
        expected = ref_sampling.top_p_mask(ref_sampling.top_k_mask(ref_logits.temperature(scores, t), k), p)
        got = fn(tf.constant(scores), tf.constant(t), tf.constant(k), tf.constant(p)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert fn.experimental_get_tracing_count() == 1


def test_sample_from_scores_matches_reference(rng):
    scores = _scores(rng, 5, 1031)
    scores[0, 10:] = -np.inf
    uniform = rng.random(5)
    # Away from CDF boundaries the float32 draw equals the float64 reference's.
    expected = ref_sampling.sample_from_scores(scores, uniform)
    eager, compiled = _both(native.sample_from_scores, scores, uniform.astype(np.float32))
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(compiled, expected)
    assert eager[0] < 10


def test_backend_compiled_primitives():
    be = TFBackend()
    buf = be.token_buffer(tf.constant([[5, 6]]), 4, fill=-1)
    assert isinstance(buf, tf.Variable)
    be.set_column(buf, 2, tf.constant([7]))
    assert buf.numpy().tolist() == [[5, 6, 7, -1]]
    out = be.dynamic_set_column(tf.constant([[1, 2, 3]]), tf.constant(1), tf.constant([9]))
    assert out.numpy().tolist() == [[1, 9, 3]]
    steps = be.dynamic_set_step(tf.zeros([2, 3, 2]), tf.constant(2), tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    assert steps.numpy()[:, 2].tolist() == [[1.0, 2.0], [3.0, 4.0]] and float(tf.reduce_sum(steps[:, :2])) == 0
    key, sub = be.rng_split(tf.constant([1, 2], tf.int64))
    assert key.shape == (2,) and sub.shape == (2,)
    assert be.isin(tf.constant([1, 2, 3]), [3, 1]).numpy().tolist() == [True, False, True]


def test_top_p_at_one_skips_the_bisection_with_the_same_result():
    """top_p >= 1 takes the branch that only drops zero-probability tokens: equal to the full bisection, also
    on rows whose float32 probabilities underflow to zero."""
    scores = np.array([[0.0, -50.0, -120.0, -np.inf, 3.0], [1.0, 1.0, -300.0, 2.0, -1e30]], np.float32)
    fast = tf.function(lambda s: native.top_p_mask(s, 1.0), jit_compile=True)(tf.constant(scores)).numpy()
    full = tf.function(lambda s: native._top_p_bisect(s, 1.0), jit_compile=True)(tf.constant(scores)).numpy()
    np.testing.assert_array_equal(fast, full)
    assert np.isneginf(fast[0, 2]) and np.isfinite(fast[0, 1])  # exp(-123) underflows in float32, exp(-53) does not
