"""Triton top-k / top-p / min-p masks vs `pyengine.ops.sampling`: masks exact (kept values bit-equal).

A top-p mask may differ from the float64 reference only where a cumulative mass lies within 1e-9 of the
threshold (float32 exp, another summation order); the test says so when it allows it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import sampling as ref


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def _rows(rng, v: int) -> np.ndarray:
    s = (rng.standard_normal((5, v)) * 2).astype(np.float32)
    s[1] = 0.75                                    # all equal
    s[2, ::3] = -np.inf                            # banned tokens
    s[3] = np.repeat(rng.standard_normal(v // 4 + 1), 4)[:v].astype(np.float32)  # ties everywhere
    s[4] = -np.inf
    s[4, 3] = 1.0                                  # one finite token
    return s


def _assert_masks(got, want, s, top_p=None):
    for row in range(s.shape[0]):
        if np.array_equal(got[row], want[row]):
            continue
        assert top_p is not None, f"row {row}: masks differ"
        x = s[row].astype(np.float64)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        cum = np.cumsum(np.sort(probs))
        gap = np.abs(cum - (1 - top_p)).min()
        assert gap < 1e-9, f"row {row}: top-p masks differ although the nearest cumulative mass is {gap:.1e} away"


@pytest.mark.parametrize("vocab,keep", [(7, 1), (111, 3), (1000, 1)])
def test_top_k_mask(vocab, keep, rng):
    from pyengine.backends.torch import triton

    s = _rows(rng, vocab)
    for k in (1, 5, vocab + 3):
        np.testing.assert_array_equal(triton.top_k_mask(_t(s), k, -np.inf, keep).numpy(), ref.top_k_mask(s, k, -np.inf, keep))


@pytest.mark.parametrize("vocab,keep", [(7, 1), (111, 3), (1000, 1)])
def test_top_p_mask(vocab, keep, rng):
    from pyengine.backends.torch import triton

    s = _rows(rng, vocab)
    for p in (0.0, 0.3, 0.9, 1.0):
        _assert_masks(triton.top_p_mask(_t(s), p, -1e9, keep).numpy(), ref.top_p_mask(s, p, -1e9, keep), s, p)


@pytest.mark.parametrize("vocab,keep", [(7, 1), (111, 3), (1000, 1)])
def test_min_p_mask(vocab, keep, rng):
    from pyengine.backends.torch import triton

    s = _rows(rng, vocab)
    for p in (0.0, 0.1, 0.5, 1.0):
        np.testing.assert_array_equal(triton.min_p_mask(_t(s), p, -np.inf, keep).numpy(), ref.min_p_mask(s, p, -np.inf, keep))


def test_bfloat16_scores_keep_their_dtype(rng):
    import torch

    from pyengine.backends.torch import triton

    s = torch.from_numpy((rng.standard_normal((3, 111)) * 2).astype(np.float32)).to(torch.bfloat16)
    got = triton.top_k_mask(s, 10)
    assert got.dtype == torch.bfloat16
    np.testing.assert_array_equal(got.float().numpy(), ref.top_k_mask(s.float().numpy(), 10))


def test_bad_warper_arguments():
    import torch

    from pyengine.backends.torch import triton

    with pytest.raises(ValueError, match="top_p"):
        triton.top_p_mask(torch.zeros(2, 5), 1.5)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        triton.top_k_mask(torch.zeros(2, 5), 2, min_tokens_to_keep=0)
