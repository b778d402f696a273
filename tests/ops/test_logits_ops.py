"""Every registered implementation of every logits/sampling op against the NumPy reference.

Parametrized from the backends' op tables, so a new implementation is tested the moment it is
registered. Masks and ids compare exactly; float results use the per-dtype table.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import logits as ref_logits
from pyengine.ops import sampling as ref_sampling
from tests.helpers import to_numpy, torch_impls
from tests.tolerances import TOLERANCES

SHAPES = [(1, 7), (3, 111), (33, 50257)]


def impls_of(op: str) -> list:
    found = [pytest.param(*p.values, id=f"torch-{p.id}") for p in torch_impls(op)]
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="torch not installed"))]


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def scores_for(shape, rng, kind="normal"):
    b, v = shape
    s = rng.standard_normal((b, v)).astype(np.float32) * 3
    if kind == "ties":
        s = np.round(s)  # many equal values
    if b > 2:
        s[1] = 0.5  # an all-equal row
    return s


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls_of("top_k_mask"))
@pytest.mark.parametrize("k", [1, 5, 50, 10**6])
def test_top_k_mask(fn, shape, k, rng):
    s = scores_for(shape, rng, "ties")
    want = ref_sampling.top_k_mask(s, k)
    got = to_numpy(fn(_t(s), k))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(got[~np.isinf(got)], want[~np.isinf(want)])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls_of("top_p_mask"))
@pytest.mark.parametrize("p,keep", [(0.0, 1), (0.3, 1), (0.9, 1), (0.9, 3), (1.0, 1)])
def test_top_p_mask(fn, shape, p, keep, rng):
    s = scores_for(shape, rng)
    want = np.isinf(ref_sampling.top_p_mask(s, p, min_tokens_to_keep=keep))
    got = np.isinf(to_numpy(fn(_t(s), p, -float("inf"), keep)))
    # Compare kept *values*, largest first: equal scores may be kept in either order (sort ties), and at
    # the nucleus boundary float32 cumsum (torch) vs float64 (reference) may keep one token more or less.
    for row in range(shape[0]):
        kept_got = np.sort(s[row][~got[row]])[::-1]
        kept_want = np.sort(s[row][~want[row]])[::-1]
        n = min(len(kept_got), len(kept_want))
        assert abs(len(kept_got) - len(kept_want)) <= 1, "top-p kept counts differ by more than the 1-token allowance"
        np.testing.assert_array_equal(kept_got[:n], kept_want[:n])
    assert (~got).sum(axis=-1).min() >= keep


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls_of("min_p_mask"))
@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0])
def test_min_p_mask(fn, shape, p, rng):
    s = scores_for(shape, rng)
    want = np.isinf(ref_sampling.min_p_mask(s, p))
    got = np.isinf(to_numpy(fn(_t(s), p)))
    assert int((got != want).sum()) <= shape[0], "min-p masks may differ only at exact-threshold ties"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls_of("repetition_penalty"))
@pytest.mark.parametrize("penalty", [0.5, 1.3])
def test_repetition_penalty(fn, shape, penalty, rng):
    s = scores_for(shape, rng)
    s[0, 0] = 0.0  # zero stays zero
    tokens = rng.integers(0, shape[1], size=(shape[0], 9))
    tokens[:, 0] = 0
    tokens[:, 1] = tokens[:, 2]  # duplicates are penalised once
    want = ref_logits.repetition_penalty(s, tokens, penalty)
    got = to_numpy(fn(_t(s), _t(tokens), penalty))
    np.testing.assert_allclose(got, want, *TOLERANCES["float32"])


@pytest.mark.parametrize("fn", impls_of("no_repeat_ngram"))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram(fn, n, rng):
    tokens = rng.integers(0, 5, size=(4, 12))
    s = scores_for((4, 11), rng)
    want = ref_logits.no_repeat_ngram(s, tokens, n)
    got = to_numpy(fn(_t(s), _t(tokens), n))
    np.testing.assert_array_equal(got, want)


def test_no_repeat_ngram_reference_by_hand():
    """History [1 2 3 1 2]: a 3-gram ban forbids 3 after (1, 2); a short history bans nothing."""
    s = np.zeros((1, 5), np.float32)
    out = ref_logits.no_repeat_ngram(s, np.array([[1, 2, 3, 1, 2]]), 3)
    assert np.isinf(out[0]).tolist() == [False, False, False, True, False]
    assert not np.isinf(ref_logits.no_repeat_ngram(s, np.array([[1]]), 3)).any()


@pytest.mark.parametrize("fn", impls_of("bad_words"))
def test_bad_words(fn, rng):
    tokens = np.array([[1, 2, 3], [4, 2, 3], [3, 3, 1]])
    s = scores_for((3, 10), rng)
    words = ((7,), (2, 3, 9), (1, 5), (0, 1, 2, 3, 4))
    want = ref_logits.bad_words(s, tokens, words)
    got = to_numpy(fn(_t(s), _t(tokens), words))
    np.testing.assert_array_equal(got, want)
    assert np.isinf(want[:, 7]).all() and np.isinf(want[:2, 9]).all() and not np.isinf(want[2, 9])
    assert np.isinf(want[2, 5]) and not np.isinf(want[0, 5])


@pytest.mark.parametrize("fn", impls_of("min_length"))
def test_min_length(fn, rng):
    s = scores_for((3, 10), rng)
    for cur in (2, 5):
        tokens = rng.integers(0, 10, size=(3, cur))
        want = ref_logits.min_length(s, tokens, 5, (1, 4))
        assert np.isinf(want[:, [1, 4]]).all() == (cur < 5)
        np.testing.assert_array_equal(to_numpy(fn(_t(s), _t(tokens), 5, (1, 4))), want)


@pytest.mark.parametrize("fn", impls_of("forced_token"))
def test_forced_token_only_at_its_length(fn, rng):
    s = scores_for((3, 10), rng)
    for cur in (1, 2):
        tokens = rng.integers(0, 10, size=(3, cur))
        want = ref_logits.forced_token(s, tokens, 1, (6,))
        if cur == 1:
            assert (want[:, 6] == 0).all() and np.isinf(np.delete(want, 6, axis=1)).all()
        else:
            np.testing.assert_array_equal(want, s)
        np.testing.assert_array_equal(to_numpy(fn(_t(s), _t(tokens), 1, (6,))), want)


def test_reference_ops_ignore_the_unwritten_tail():
    """A compiled loop's buffer holds -1 past the current length: the reference treats it as absent."""
    rng = np.random.default_rng(0)
    s = scores_for((2, 12), rng)
    hist = rng.integers(0, 12, size=(2, 5))
    buf = np.concatenate([hist, np.full((2, 4), -1)], axis=1)
    assert ref_logits.seq_length(buf) == 5 and ref_logits.seq_length(hist) == 5
    for op, args in [
        (ref_logits.repetition_penalty, (1.7,)),
        (ref_logits.no_repeat_ngram, (2,)),
        (ref_logits.bad_words, ([[int(hist[0, -1]), 3], [5]],)),
        (ref_logits.min_length, (6, (2,))),
        (ref_logits.forced_token, (5, (7,))),
    ]:
        np.testing.assert_array_equal(op(s, buf, *args), op(s, hist, *args))


@pytest.mark.parametrize("fn", impls_of("inf_nan_remove"))
def test_inf_nan_remove(fn):
    s = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    np.testing.assert_array_equal(to_numpy(fn(_t(s))), ref_logits.inf_nan_remove(s))
    info = np.finfo(np.float32)
    assert ref_logits.inf_nan_remove(s).tolist() == [[0.0, info.max, info.min, 1.0]]  # transformers 4.57


@pytest.mark.parametrize("fn", impls_of("temperature"))
def test_temperature(fn, rng):
    s = scores_for((3, 111), rng)
    np.testing.assert_allclose(to_numpy(fn(_t(s), 0.7)), ref_logits.temperature(s, 0.7), *TOLERANCES["float32"])


@pytest.mark.parametrize("fn", impls_of("argmax"))
def test_argmax_ties_go_to_lowest_id(fn):
    s = np.array([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]], np.float32)
    np.testing.assert_array_equal(to_numpy(fn(_t(s))), ref_sampling.argmax(s))
    assert ref_sampling.argmax(s).tolist() == [1, 0]


def test_sample_reference_never_draws_masked_tokens(rng):
    s = scores_for((64, 111), rng)
    s = ref_sampling.top_k_mask(s, 3)
    for _ in range(20):
        picks = ref_sampling.sample_from_scores(s, rng.random(64))
        assert np.isfinite(s[np.arange(64), picks]).all()
    edge = ref_sampling.sample_from_scores(s, np.full(64, np.nextafter(1.0, 0.0)))
    assert np.isfinite(s[np.arange(64), edge]).all()
