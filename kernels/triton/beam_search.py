"""Beam search step in Triton: beam scores added and the top 2K candidates over (beams x vocab), unsorted input.

Spec (the test's NumPy reference, `tests/gpu_kernels/test_beam_topk.py`): for batch item b, the candidates
are `log_probs[b * K + beam, token] + beam_scores[b, beam]` (float32) over the flat index `beam * V + token`;
the result is the `k2` best, in descending score, ties to the lower flat index: `(scores [B, k2] float32,
flat ids [B, k2] int64)`, so `beam = id // V`, `token = id % V`.

One program per batch item, no sort of the K * V candidates:
    max key (1 pass); the k2-th largest key by multi-pivot bisection on order-preserving keys (~8 passes);
    compaction of the survivors (scores above it, then the earliest ties) into k2 slots (1 pass);
    ranking of the k2 survivors by an all-pairs compare in registers.
Traffic: ~10 reads of K * V floats per batch item (L2-resident at K * V <= 1M), 2 * k2 writes. The fused
add never writes the `[B, K * V]` sum that `torch.topk(log_probs + beam_scores)` materialises.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from pyengine.kernels.triton._utils import KEY_NEG_INF, block_size, ordered_key

PIVOTS = 16


@triton.jit
def _values(lp_ptr, bs_ptr, offs, N, V):
    valid = offs < N
    x = tl.load(lp_ptr + offs, mask=valid, other=float("-inf"))
    beam = tl.load(bs_ptr + offs // V, mask=valid, other=0.0)
    return tl.where(valid, x + beam, float("-inf")), valid


@triton.jit(do_not_specialize=["N", "V", "K", "k2"])  # ints used in arithmetic: never constexpr 1
def _beam_topk_kernel(lp_ptr, bs_ptr, out_s_ptr, out_i_ptr, slot_s_ptr, slot_i_ptr, N, V, K, k2,
                      BLOCK: tl.constexpr, SBLOCK: tl.constexpr, P: tl.constexpr, K2: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    lp = lp_ptr + b * N
    bs = bs_ptr + b * K
    m = tl.full([], float("-inf"), tl.float32)
    for start in range(0, N, BLOCK):
        x, valid = _values(lp, bs, start + tl.arange(0, BLOCK), N, V)
        m = tl.maximum(m, tl.max(x, axis=0))
    hi = ordered_key(m)
    lo = hi * 0 + KEY_NEG_INF
    # the k2-th largest key: the largest key K with count(key < K) <= N - k2
    j = tl.arange(0, P).to(tl.int64)
    while lo < hi:
        piv = lo + 1 + ((hi - lo - 1) * (j + 1)) // P
        acc = tl.zeros([P], dtype=tl.int64)
        for start in range(0, N, SBLOCK):
            x, valid = _values(lp, bs, start + tl.arange(0, SBLOCK), N, V)
            below = (ordered_key(x)[None, :] < piv[:, None]) & valid[None, :]
            acc += tl.sum(below.to(tl.int32), axis=1).to(tl.int64)
        ok = acc <= N - k2
        lo = tl.max(tl.where(ok, piv, lo), axis=0)
        hi = tl.min(tl.where(ok, hi, piv - 1), axis=0)
    kth = lo
    n_above = lo * 0
    for start in range(0, N, BLOCK):
        x, valid = _values(lp, bs, start + tl.arange(0, BLOCK), N, V)
        n_above += tl.sum((valid & (ordered_key(x) > kth)).to(tl.int64), axis=0)
    # compaction: every score above the k2-th, then the earliest ties, into k2 slots
    taken_above = n_above * 0
    taken_ties = n_above * 0
    slot_s = slot_s_ptr + b * K2
    slot_i = slot_i_ptr + b * K2
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x, valid = _values(lp, bs, offs, N, V)
        key = ordered_key(x)
        above = valid & (key > kth)
        tie = valid & (key == kth)
        ra = taken_above + tl.cumsum(above.to(tl.int64), axis=0) - 1
        rt = taken_ties + tl.cumsum(tie.to(tl.int64), axis=0) - 1
        keep_tie = tie & (n_above + rt < k2)
        slot = tl.where(above, ra, n_above + rt)
        tl.store(slot_s + slot, x, mask=above | keep_tie)
        tl.store(slot_i + slot, offs.to(tl.int64), mask=above | keep_tie)
        taken_above += tl.sum(above.to(tl.int64), axis=0)
        taken_ties += tl.sum(tie.to(tl.int64), axis=0)
    tl.debug_barrier()
    # rank the k2 survivors: descending score, ties to the lower flat index
    i = tl.arange(0, K2)
    s = tl.load(slot_s + i, mask=i < k2, other=float("-inf"))
    idx = tl.load(slot_i + i, mask=i < k2, other=N)
    ks = ordered_key(s)
    before = (ks[None, :] > ks[:, None]) | ((ks[None, :] == ks[:, None]) & (idx[None, :] < idx[:, None]))
    rank = tl.sum((before & (i[None, :] < k2)).to(tl.int32), axis=1)
    tl.store(out_s_ptr + b * k2 + rank, s, mask=i < k2)
    tl.store(out_i_ptr + b * k2 + rank, idx, mask=i < k2)


def beam_topk(log_probs: torch.Tensor, beam_scores: torch.Tensor, k2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`log_probs` `[B * K, V]` float32 contiguous, `beam_scores` `[B, K]` float32: the k2 best `(scores, ids)`."""
    batch, beams = beam_scores.shape
    v = log_probs.shape[1]
    n = beams * v
    scores = torch.empty((batch, k2), dtype=torch.float32, device=log_probs.device)
    ids = torch.empty((batch, k2), dtype=torch.int64, device=log_probs.device)
    if batch and k2:
        k2p = triton.next_power_of_2(max(k2, 2))
        slot_s = torch.empty((batch, k2p), dtype=torch.float32, device=log_probs.device)
        slot_i = torch.empty((batch, k2p), dtype=torch.int64, device=log_probs.device)
        _beam_topk_kernel[(batch,)](
            log_probs, beam_scores, scores, ids, slot_s, slot_i, n, v, beams, k2,
            BLOCK=block_size(n), SBLOCK=block_size(n, 256), P=PIVOTS, K2=k2p, num_warps=8 if n >= 8192 else 4,
        )
    return scores, ids
