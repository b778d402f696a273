"""The sampling warpers as separate ops in Triton: top-k, top-p and min-p masks (no vocabulary sort).

Specs: `pyengine.ops.sampling.top_k_mask`, `top_p_mask`, `min_p_mask` (transformers' TopK/TopP/MinP warpers):
removed tokens become `filter_value`, the `min_tokens_to_keep` best always stay. These serve the unfused
sampling path (transformers' order of warpers, then a torch draw); `sampling.fused_sample` fuses them.

One kernel, one program per row, MODE picks the warper; the thresholds come from the same key bisection as
the fused kernel (`sampling._search`, PIVOTS keys per pass):
    top-k   k-th largest key (~8 passes) + one write pass.                       ~10 reads + 1 write of V
    top-p   total mass (1), boundary key by mass (~8), tie statistics (1), write pass ranking the boundary
            ties in vocabulary order (1); the min_tokens_to_keep fallback adds ~9.  ~12 reads + 1 write
    min-p   max (1), count of survivors (1), write pass; when fewer than min_tokens_to_keep survive, the
            min_tokens_to_keep-th largest key (~8) keeps the best (ties: lower ids first).  3 reads + 1 write
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from pyengine.kernels.triton._utils import KEY_NEG_INF, block_size, ordered_key
from pyengine.kernels.triton.sampling import PIVOTS, SEARCH_BLOCK, _search, _tie_stats, _warps

TOP_K, TOP_P, MIN_P = 0, 1, 2


@triton.jit(do_not_specialize=["V", "top_k", "min_keep"])  # ints used in arithmetic: never constexpr 1
def _mask_kernel(x_ptr, out_ptr, V, stride_x, top_k, top_p, min_p, filter_value, min_keep,
                 MODE: tl.constexpr, BLOCK: tl.constexpr, SBLOCK: tl.constexpr, P: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + row * stride_x
    dst = out_ptr + row * V
    m = tl.full([], float("-inf"), tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.max(tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32), axis=0))
    m = tl.where(m == float("-inf"), 0.0, m)
    max_key = ordered_key(m)
    neg = max_key * 0 + KEY_NEG_INF
    one = tl.full([], 1.0, tl.float32)
    # keep: key > vb, or key == vb and the tie's rank in vocabulary order is >= r (top-p: first ties go),
    # or (min-p) e >= min_p; `keep_first` ties at vb are kept instead (min-p's fallback: first ties stay).
    vb = neg - 1
    r = neg * 0
    kth = neg
    keep_first = neg * 0 - 1
    if MODE == 0:
        k = tl.minimum(tl.maximum(top_k, min_keep), V)
        vb = _search(row_ptr, V, neg, max_key, (V - k).to(tl.float64), neg, m, one, False, SBLOCK, P) - 1
        r = neg * 0 + V  # key > vb alone decides: no key at vb passes by rank
    if MODE == 1:
        total = tl.zeros([], dtype=tl.float64)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
            total += tl.sum(tl.exp(x - m).to(tl.float64), axis=0)
        target = (1.0 - top_p) * total
        vb = _search(row_ptr, V, neg, max_key + 1, target, kth, m, one, True, SBLOCK, P)
        mass_below, n_below, n_ties, pv, n_above = _tie_stats(row_ptr, V, vb, kth, m, one, BLOCK)
        fit = tl.floor((target - mass_below) / tl.where(pv > 0, pv, 1.0)).to(tl.int64)
        r = tl.where(pv > 0, tl.minimum(tl.maximum(fit, 0), n_ties), n_ties)
        if n_above + n_ties - r < min_keep:
            limit = V - min_keep
            vb = _search(row_ptr, V, neg, max_key + 1, limit.to(tl.float64), kth, m, one, False, SBLOCK, P)
            mass_below, n_below, n_ties, pv, n_above = _tie_stats(row_ptr, V, vb, kth, m, one, BLOCK)
            r = tl.minimum(tl.maximum(limit - n_below, 0), n_ties)
    if MODE == 2:
        vb = max_key + 1  # nothing passes on key alone: e >= min_p decides
        kept = neg * 0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
            kept += tl.sum(((offs < V) & (tl.exp(x - m) >= min_p)).to(tl.int64), axis=0)
        if kept < min_keep:  # keep the min_keep best in descending order, ties to the lower id
            k = tl.minimum(min_keep, V)
            vb = _search(row_ptr, V, neg, max_key, (V - k).to(tl.float64), neg, m, one, False, SBLOCK, P)
            mass_below, n_below, n_ties, pv, n_above = _tie_stats(row_ptr, V, vb, kth, m, one, BLOCK)
            keep_first = k - n_above
            r = neg * 0 + V  # no tie passes by rank >= r
    seen = neg * 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        raw = tl.load(row_ptr + offs, mask=valid, other=float("-inf"))
        x = raw.to(tl.float32)
        key = ordered_key(x)
        tie = valid & (key == vb)
        rank = seen + tl.cumsum(tie.to(tl.int64), axis=0) - 1
        seen += tl.sum(tie.to(tl.int64), axis=0)
        keep = (key > vb) | (tie & (rank >= r)) | (tie & (rank < keep_first))
        if MODE == 2:
            keep = keep | (tl.exp(x - m) >= min_p)
        tl.store(dst + offs, tl.where(keep, x, filter_value).to(raw.dtype), mask=valid)


def _launch(scores: torch.Tensor, mode: int, top_k: int, top_p: float, min_p: float, filter_value: float,
            min_tokens_to_keep: int) -> torch.Tensor:
    b, v = scores.shape
    out = torch.empty((b, v), dtype=scores.dtype, device=scores.device)
    if b:
        _mask_kernel[(b,)](
            scores, out, v, scores.stride(0), int(top_k), float(top_p), float(min_p), float(filter_value),
            int(min_tokens_to_keep), MODE=mode, BLOCK=block_size(v), SBLOCK=block_size(v, SEARCH_BLOCK), P=PIVOTS,
            num_warps=_warps(v),
        )
    return out


def top_k_mask(scores: torch.Tensor, top_k: int, filter_value: float, min_tokens_to_keep: int) -> torch.Tensor:
    """Scores `[B, V]` (unit stride) with everything below the k-th largest set to `filter_value` (new tensor)."""
    return _launch(scores, TOP_K, top_k, 1.0, 0.0, filter_value, min_tokens_to_keep)


def top_p_mask(scores: torch.Tensor, top_p: float, filter_value: float, min_tokens_to_keep: int) -> torch.Tensor:
    """Scores outside the nucleus set to `filter_value` (new tensor); ties at the boundary go in id order."""
    return _launch(scores, TOP_P, 0, top_p, 0.0, filter_value, min_tokens_to_keep)


def min_p_mask(scores: torch.Tensor, min_p: float, filter_value: float, min_tokens_to_keep: int) -> torch.Tensor:
    """Scores with probability below `min_p * max_prob` set to `filter_value` (new tensor)."""
    return _launch(scores, MIN_P, 0, 1.0, min_p, filter_value, min_tokens_to_keep)
