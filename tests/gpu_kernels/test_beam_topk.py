"""Triton beam step top-2K over (beams x vocab) vs a NumPy reference that fixes the tie order.

Reference: candidates `log_probs[b*K + beam] + beam_scores[b, beam]` (float32) over the flat index
`beam * V + token`; the k2 best in descending score, ties to the lower flat index (lower beam, then lower id).
"""

from __future__ import annotations

import numpy as np
import pytest


def reference_beam_topk(log_probs: np.ndarray, beam_scores: np.ndarray, k2: int):
    b, k = beam_scores.shape
    acc = (log_probs.reshape(b, k, -1) + beam_scores[:, :, None]).reshape(b, -1).astype(np.float32)
    order = np.lexsort((np.broadcast_to(np.arange(acc.shape[1]), acc.shape), -acc.astype(np.float64)), axis=-1)[:, :k2]
    return np.take_along_axis(acc, order, axis=-1), order


@pytest.mark.parametrize("batch,beams,vocab", [(1, 1, 7), (3, 2, 111), (2, 4, 1000)])
def test_beam_topk_matches_reference(batch, beams, vocab, rng):
    import torch

    from pyengine.backends.torch import triton

    lp = np.log(rng.dirichlet(np.ones(vocab), batch * beams)).astype(np.float32)
    lp[0, : vocab // 3] = -np.inf
    bs = rng.standard_normal((batch, beams)).astype(np.float32)
    k2 = min(2 * beams, beams * vocab)
    got_s, got_i = triton.beam_topk(torch.from_numpy(lp), torch.from_numpy(bs), k2)
    want_s, want_i = reference_beam_topk(lp, bs, k2)
    np.testing.assert_array_equal(got_i.numpy(), want_i)
    np.testing.assert_array_equal(got_s.numpy(), want_s)


def test_beam_topk_ties_go_to_the_lower_beam_then_token():
    import torch

    from pyengine.backends.torch import triton

    lp = np.zeros((3, 7), np.float32)  # one batch item, three beams, every candidate equal
    bs = np.zeros((1, 3), np.float32)
    s, i = triton.beam_topk(torch.from_numpy(lp), torch.from_numpy(bs), 6)
    assert i.tolist() == [[0, 1, 2, 3, 4, 5]] and s.tolist() == [[0.0] * 6]
    bs[0, 2] = 1.0  # beam 2 now leads
    s, i = triton.beam_topk(torch.from_numpy(lp), torch.from_numpy(bs), 9)
    assert i.tolist() == [[14, 15, 16, 17, 18, 19, 20, 0, 1]]


def test_beam_topk_bad_arguments():
    import torch

    from pyengine.backends.torch import triton

    with pytest.raises(ValueError, match="rows"):
        triton.beam_topk(torch.zeros(5, 7), torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match="k2"):
        triton.beam_topk(torch.zeros(4, 7), torch.zeros(2, 2), 15)
