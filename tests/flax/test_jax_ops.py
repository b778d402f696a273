"""JAX processor ops (pyengine/backends/jax/native.py) against the NumPy reference ops.

Odd shapes, -inf rows, all-equal rows, and the compiled loop's token buffer (ids < 0 = not yet written)
next to the same history without the tail. Every op also runs under jax.jit with its numeric argument
traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyengine.backends.jax import native
from pyengine.ops import logits as ref_logits
from pyengine.ops import sampling as ref_sampling

SHAPES = [(1, 7), (3, 111), (5, 33)]


def _scores(batch: int, vocab: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(batch, vocab)).astype(np.float32) * 3
    if batch > 2:
        s[1] = -np.inf  # every token banned
        s[2] = 0.5  # all equal
    return s


def _history(batch: int, vocab: int, seed: int, length: int = 9) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, min(vocab, 6), size=(batch, length)).astype(np.int32)


def _with_tail(tokens: np.ndarray, extra: int = 4) -> np.ndarray:
    return np.concatenate([tokens, -np.ones((tokens.shape[0], extra), np.int32)], axis=1)


def _close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0])
def test_history_ops_match_reference(shape, seed):
    scores = _scores(*shape, seed)
    hist = _history(*shape, seed)
    cases = [
        ("repetition_penalty", (1.7,)), ("repetition_penalty", (0.6,)),
        ("no_repeat_ngram", (1,)), ("no_repeat_ngram", (2,)), ("no_repeat_ngram", (3,)),
        ("bad_words", (((3,), (1, 2), (0, 1, 4), (5, 5)),)),
        ("min_length", (12, (0, 2))), ("min_length", (5, (1,))),
        ("forced_token", (9, (4,))), ("forced_token", (3, (1, 2))),
    ]  # fmt: skip
    for name, args in cases:
        expected = getattr(ref_logits, name)(scores, hist, *args)
        _close(getattr(native, name)(jnp.asarray(scores), hist, *args), expected)
        _close(getattr(native, name)(jnp.asarray(scores), _with_tail(hist), *args), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_warpers_match_reference(shape):
    scores = _scores(*shape, 3)
    for k in (1, 3, 50, 500):
        _close(native.top_k_mask(jnp.asarray(scores), k), ref_sampling.top_k_mask(scores, k))
    for p in (0.0, 0.3, 0.9, 1.0):
        for keep in (1, 2):
            _close(native.top_p_mask(jnp.asarray(scores), p, -np.inf, keep), ref_sampling.top_p_mask(scores, p, -np.inf, keep))
    for p in (0.05, 0.5):
        _close(native.min_p_mask(jnp.asarray(scores), p, -np.inf, 2), ref_sampling.min_p_mask(scores, p, -np.inf, 2))
    _close(native.temperature(jnp.asarray(scores), 0.7), ref_logits.temperature(scores, 0.7))
    _close(native.inf_nan_remove(jnp.asarray(np.where(scores > 2, np.nan, scores))),
           ref_logits.inf_nan_remove(np.where(scores > 2, np.nan, scores)))
    np.testing.assert_array_equal(native.argmax(jnp.asarray(scores)), ref_sampling.argmax(scores))


def test_sample_from_scores_matches_reference():
    scores = _scores(6, 111, 4)
    scores[1] = np.random.default_rng(0).normal(size=111)  # no -inf row: both define a draw
    masked = ref_sampling.top_k_mask(scores, 5)
    u = np.random.default_rng(1).random(6).astype(np.float32)
    np.testing.assert_array_equal(native.sample_from_scores(jnp.asarray(masked), jnp.asarray(u)),
                                  ref_sampling.sample_from_scores(masked, u.astype(np.float64)))


def test_ops_trace_with_traced_values():
    scores = _scores(3, 33, 5)
    hist = _with_tail(_history(3, 33, 5))

    @jax.jit
    def chain(s, t, temp, k, p, pen, min_len):
        s = native.repetition_penalty(s, t, pen)
        s = native.min_length(s, t, min_len, (2,))
        s = native.no_repeat_ngram(s, t, 2)
        s = native.forced_token(s, t, min_len, (4,))
        s = native.temperature(s, temp)
        s = native.top_k_mask(s, k)
        return native.top_p_mask(s, p)

    got = chain(jnp.asarray(scores), hist, 0.8, 5, 0.9, 1.3, 12)
    plain = hist[:, :9]
    want = ref_logits.repetition_penalty(scores, plain, 1.3)
    want = ref_logits.min_length(want, plain, 12, (2,))
    want = ref_logits.no_repeat_ngram(want, plain, 2)
    want = ref_logits.forced_token(want, plain, 12, (4,))
    want = ref_sampling.top_p_mask(ref_sampling.top_k_mask(ref_logits.temperature(want, 0.8), 5), 0.9)
    _close(got, want)
    assert chain._cache_size() == 1
    chain(jnp.asarray(scores), hist, 0.5, 9, 0.5, 1.1, 3)
    assert chain._cache_size() == 1  # new values, no new compilation


def test_top_p_at_one_skips_the_sort_with_the_same_result():
    """top_p >= 1 takes the branch that only drops zero-probability tokens: equal to the sorted path, also on
    rows whose float32 probabilities underflow to zero."""
    scores = jnp.asarray(np.array([[0.0, -50.0, -120.0, -np.inf, 3.0], [1.0, 1.0, -300.0, 2.0, -1e30]], np.float32))
    fast = jax.jit(lambda s: native.top_p_mask(s, 1.0))(scores)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(jax.jit(lambda s: native._top_p_sorted(s, 1.0))(scores)))
    assert np.isneginf(np.asarray(fast)[0, 2]) and np.isfinite(np.asarray(fast)[0, 1])
