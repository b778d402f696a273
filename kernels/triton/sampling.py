"""Fused sampling in Triton: processors, top-k / top-p / min-p and the draw, without sorting the vocabulary.

Spec: `pyengine.ops.fused` (`fused_sample`, `fused_argmax`); the noise is `pyengine.ops.random.uniform`, so
for the same (seed, step) these kernels draw the reference's token (exact unless u falls within ~1e-6 of a
CDF value: float32 exp and a different summation order move the CDF in its last bits).

Kernels, one program per row, each looping over the row in blocks of BLOCK tokens:

    process_logits  [B, V] any float -> [B, V] float32: repetition penalty over the row's history
                    (gather/scatter on the history's ids only), min-length EOS ban, banned ids.
                    Traffic: read V + write V floats, plus 2 * cur_len for the penalty.
    fused_sample    [B, V] float -> [B] int64. No sort: every threshold is found by bisection on
                    order-preserving int keys of the float32 logits (`_utils.ordered_key`), PIVOTS keys
                    per pass (a pass narrows the key range PIVOTS + 1 times, so ~8 passes for 2^32 keys):
                      max (1 pass); top-k: the largest key K with count(key < K) <= V - k (~8);
                      total mass of the survivors (1); top-p: the largest K with mass(key < K) <=
                      (1 - p) * total (~8) and the tie statistics at K (1); min-p is a compare against
                      exp((x - max) / t) >= min_p; the final total (1) and the inverse-CDF draw in
                      vocabulary order (1).
                    Traffic: about 20 reads of the row when every filter is on, 3 when none is; the
                    row (4 V bytes) stays in L2 between passes at real vocabularies.
    argmax          [B, V] float -> [B] int64, ties to the lowest id; one read of the row.

Ties follow the reference: top-k keeps every tie of the k-th value; top-p removes, among ties at the
boundary value, those earliest in vocabulary order (a stable ascending sort puts them first); the
`min_tokens_to_keep` fallback of top-p keeps the last tokens of that same order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from pyengine.kernels.triton._utils import KEY_NEG_INF, block_size, ordered_key, uniform

PIVOTS = 16
# The bisection's [PIVOTS, SEARCH_BLOCK] compare tile stays in registers (16 x 256 float64 over 8 warps).
SEARCH_BLOCK = 256


def _warps(vocab: int) -> int:
    """More warps per row program for real vocabularies (one program streams the whole row)."""
    return 8 if vocab >= 8192 else 4


@triton.jit(do_not_specialize=["V", "n_eos", "n_ban"])  # ints used in arithmetic: never constexpr 1
def _process_logits_kernel(
    scores_ptr, out_ptr, tokens_ptr, cur_len_ptr, penalty_ptr, min_len_ptr, eos_ptr, n_eos, ban_ptr, n_ban,
    V, stride_s, stride_t, BLOCK: tl.constexpr, IDS_BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    src = scores_ptr + row * stride_s
    dst = out_ptr + row * V
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(dst + offs, tl.load(src + offs, mask=offs < V).to(tl.float32), mask=offs < V)
    tl.debug_barrier()
    n = tl.load(cur_len_ptr + row)
    pen = tl.load(penalty_ptr + row)
    if pen != 1.0:  # gather from the input, scatter into the copy: duplicates write the same value
        for first in range(0, n, IDS_BLOCK):
            offs = first + tl.arange(0, IDS_BLOCK)
            ids = tl.load(tokens_ptr + row * stride_t + offs, mask=offs < n, other=-1)
            ok = (offs < n) & (ids >= 0) & (ids < V)
            s = tl.load(src + ids, mask=ok, other=0.0).to(tl.float32)
            s = tl.where(s < 0, s * pen, tl.math.div_rn(s, pen))
            tl.store(dst + ids, s, mask=ok)
    tl.debug_barrier()
    if n < tl.load(min_len_ptr + row):
        for first_eos in range(0, n_eos, IDS_BLOCK):
            offs = first_eos + tl.arange(0, IDS_BLOCK)
            ids = tl.load(eos_ptr + offs, mask=offs < n_eos, other=-1)
            tl.store(dst + ids, float("-inf"), mask=(offs < n_eos) & (ids >= 0) & (ids < V))
    for first_ban in range(0, n_ban, IDS_BLOCK):
        offs = first_ban + tl.arange(0, IDS_BLOCK)
        ids = tl.load(ban_ptr + offs, mask=offs < n_ban, other=-1)
        tl.store(dst + ids, float("-inf"), mask=(offs < n_ban) & (ids >= 0) & (ids < V))


def process_logits(
    scores: torch.Tensor, tokens: torch.Tensor, cur_len: torch.Tensor, penalty: torch.Tensor,
    min_len: torch.Tensor, eos_ids: torch.Tensor, banned_ids: torch.Tensor,
) -> torch.Tensor:
    """Repetition penalty + bans, `[B, V]` float32 (new tensor). Per-row tensors `[B]` on the scores' device:
    cur_len int64, penalty float32, min_len int64; id lists int64 `[n]`. Ids outside [0, V) are ignored."""
    b, v = scores.shape
    out = torch.empty((b, v), dtype=torch.float32, device=scores.device)
    if b == 0:
        return out
    _process_logits_kernel[(b,)](
        scores, out, tokens, cur_len, penalty, min_len, eos_ids, eos_ids.numel(), banned_ids, banned_ids.numel(),
        v, scores.stride(0), tokens.stride(0), BLOCK=block_size(v), IDS_BLOCK=64, num_warps=_warps(v),
    )
    return out


@triton.jit
def _search(row_ptr, V, lo, hi, target, kth, m, inv_t, USE_MASS: tl.constexpr, BLOCK: tl.constexpr,
            P: tl.constexpr):
    """The largest key K in [lo, hi] with weight(effective key < K) <= target.

    weight is 1 per token (count) or exp((x - m) * inv_t) (mass); a token below the top-k key `kth` has
    the effective key of -inf and no mass. Requires weight(key < lo) <= target.
    """
    j = tl.arange(0, P).to(tl.int64)
    while lo < hi:
        piv = lo + 1 + ((hi - lo - 1) * (j + 1)) // P  # [P], strictly above lo, the last one = hi
        acc = tl.zeros([P], dtype=tl.float64)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            valid = offs < V
            x = tl.load(row_ptr + offs, mask=valid, other=float("-inf")).to(tl.float32)
            key = ordered_key(x)
            live = valid & (key >= kth)
            key = tl.where(live, key, KEY_NEG_INF)
            if USE_MASS:
                w = tl.where(live, tl.exp((x - m) * inv_t), 0.0).to(tl.float64)
            else:
                w = valid.to(tl.float64)
            acc += tl.sum(tl.where(key[None, :] < piv[:, None], w[None, :], 0.0), axis=1)
        ok = acc <= target
        lo = tl.max(tl.where(ok, piv, lo), axis=0)
        hi = tl.min(tl.where(ok, hi, piv - 1), axis=0)
    return lo


@triton.jit
def _tie_stats(row_ptr, V, vb, kth, m, inv_t, BLOCK: tl.constexpr):
    """Around boundary key vb: (mass below, count below, count equal, mass of one tie, count above)."""
    mass_below = tl.zeros([], dtype=tl.float64)
    n_below = tl.zeros([], dtype=tl.int64)
    n_ties = tl.zeros([], dtype=tl.int64)
    n_above = tl.zeros([], dtype=tl.int64)
    pv = tl.zeros([], dtype=tl.float64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < V
        x = tl.load(row_ptr + offs, mask=valid, other=float("-inf")).to(tl.float32)
        key = ordered_key(x)
        live = valid & (key >= kth)
        key = tl.where(live, key, KEY_NEG_INF)
        e = tl.where(live, tl.exp((x - m) * inv_t), 0.0).to(tl.float64)
        below = valid & (key < vb)
        tie = valid & (key == vb)
        mass_below += tl.sum(tl.where(below, e, 0.0), axis=0)
        n_below += tl.sum(below.to(tl.int64), axis=0)
        n_ties += tl.sum(tie.to(tl.int64), axis=0)
        n_above += tl.sum((valid & (key > vb)).to(tl.int64), axis=0)
        pv = tl.maximum(pv, tl.max(tl.where(tie, e, 0.0), axis=0))
    return mass_below, n_below, n_ties, pv, n_above


@triton.jit
def _final_mass(row_ptr, start, V, m, inv_t, kth, vb, r, seen, min_p, BLOCK: tl.constexpr):
    """One block's masses after top-k, top-p (ties at vb ranked in vocabulary order) and min-p."""
    offs = start + tl.arange(0, BLOCK)
    valid = offs < V
    x = tl.load(row_ptr + offs, mask=valid, other=float("-inf")).to(tl.float32)
    key = ordered_key(x)
    live = valid & (key >= kth)
    key = tl.where(live, key, KEY_NEG_INF)
    tie = valid & (key == vb)
    rank = seen + tl.cumsum(tie.to(tl.int64), axis=0) - 1
    e = tl.exp((x - m) * inv_t)
    keep = live & ((key > vb) | (tie & (rank >= r))) & (e >= min_p)  # e >= 0: min_p 0 keeps all
    return tl.where(keep, e, 0.0).to(tl.float64), offs.to(tl.int64), seen + tl.sum(tie.to(tl.int64), axis=0)


@triton.jit(do_not_specialize=["V", "min_keep"])  # ints used in arithmetic: never constexpr 1
def _fused_sample_kernel(
    x_ptr, stride_x, out_ptr, temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, seed_ptr, step_ptr, V, min_keep,
    BLOCK: tl.constexpr, SBLOCK: tl.constexpr, P: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + row * stride_x
    m = tl.full([], float("-inf"), tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.max(tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32), axis=0))
    empty = m == float("-inf")
    m = tl.where(empty, 0.0, m)
    max_key = ordered_key(m)
    inv_t = (1.0 / tl.load(temp_ptr + row)).to(tl.float32)
    top_k = tl.load(top_k_ptr + row)
    top_p = tl.load(top_p_ptr + row)
    min_p = tl.load(min_p_ptr + row).to(tl.float32)
    neg = max_key * 0 + KEY_NEG_INF

    # top-k: the k-th largest key (ties at it all stay)
    kth = neg
    if top_k > 0:
        k = tl.minimum(tl.maximum(top_k, min_keep), V)
        kth = _search(row_ptr, V, neg, max_key, (V - k).to(tl.float64), neg, m, inv_t, False, SBLOCK, P)
    total = tl.zeros([], dtype=tl.float64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        live = (offs < V) & (ordered_key(x) >= kth)
        total += tl.sum(tl.where(live, tl.exp((x - m) * inv_t), 0.0).to(tl.float64), axis=0)

    # top-p: remove the prefix of the ascending order whose mass is <= (1 - p) * total
    vb = neg - 1
    r = neg * 0
    if top_p < 1.0:
        target = (1.0 - top_p) * total
        vb = _search(row_ptr, V, neg, max_key + 1, target, kth, m, inv_t, True, SBLOCK, P)
        mass_below, n_below, n_ties, pv, n_above = _tie_stats(row_ptr, V, vb, kth, m, inv_t, BLOCK)
        fit = tl.floor((target - mass_below) / tl.where(pv > 0, pv, 1.0)).to(tl.int64)
        r = tl.where(pv > 0, tl.minimum(tl.maximum(fit, 0), n_ties), n_ties)
        if n_above + n_ties - r < min_keep:  # keep the last min_keep tokens of the ascending order
            limit = V - min_keep
            vb = _search(row_ptr, V, neg, max_key + 1, limit.to(tl.float64), kth, m, inv_t, False, SBLOCK, P)
            mass_below, n_below, n_ties, pv, n_above = _tie_stats(row_ptr, V, vb, kth, m, inv_t, BLOCK)
            r = tl.minimum(tl.maximum(limit - n_below, 0), n_ties)

    # draw: inverse CDF over the surviving masses, in vocabulary order
    final = tl.zeros([], dtype=tl.float64)
    seen = neg * 0
    for start in range(0, V, BLOCK):
        mass, offs, seen = _final_mass(row_ptr, start, V, m, inv_t, kth, vb, r, seen, min_p, BLOCK)
        final += tl.sum(mass, axis=0)
    target = uniform(tl.load(seed_ptr + row), tl.load(step_ptr + row), neg * 0) * final
    cum = tl.zeros([], dtype=tl.float64)
    pick = neg * 0 - 1
    last = neg * 0
    seen = neg * 0
    for start in range(0, V, BLOCK):
        mass, offs, seen = _final_mass(row_ptr, start, V, m, inv_t, kth, vb, r, seen, min_p, BLOCK)
        hit = (cum + tl.cumsum(mass, axis=0) > target) & (mass > 0)
        first = tl.min(tl.where(hit, offs, V), axis=0)
        pick = tl.where((pick < 0) & (first < V), first, pick)
        last = tl.maximum(last, tl.max(tl.where(mass > 0, offs, 0), axis=0))
        cum += tl.sum(mass, axis=0)
    token = tl.where(pick >= 0, pick, last)
    tl.store(out_ptr + row, tl.where(empty, 0, token))


def fused_sample(
    x: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
    seed: torch.Tensor, step: torch.Tensor, min_tokens_to_keep: int = 1,
) -> torch.Tensor:
    """Warpers + draw on processed logits `x` `[B, V]` (float32/bf16/fp16, unit stride): `[B]` int64.

    Per-row `[B]` tensors on x's device: temperature float64, top_k int64, top_p float64, min_p float64,
    seed int64, step int64. min-p with min_tokens_to_keep > 1 is not covered (the caller routes it).
    """
    b, v = x.shape
    out = torch.empty(b, dtype=torch.int64, device=x.device)
    if b:
        _fused_sample_kernel[(b,)](
            x, x.stride(0), out, temperature, top_k, top_p, min_p, seed, step, v, int(min_tokens_to_keep),
            BLOCK=block_size(v), SBLOCK=block_size(v, SEARCH_BLOCK), P=PIVOTS, num_warps=_warps(v),
        )
    return out


@triton.jit
def _argmax_kernel(x_ptr, stride_x, out_ptr, V, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    best = tl.full([], float("-inf"), tl.float32)
    best_id = tl.zeros([], dtype=tl.int64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        bm = tl.max(x, axis=0)
        bi = tl.min(tl.where(x == bm, offs, V), axis=0).to(tl.int64)  # lowest id of the block's max
        better = bm > best
        best_id = tl.where(better, bi, best_id)
        best = tl.where(better, bm, best)
    tl.store(out_ptr + row, best_id)


def argmax(x: torch.Tensor) -> torch.Tensor:
    """`[B]` int64 argmax of `[B, V]` (unit stride), ties to the lowest id; a row of -inf gives 0."""
    b, v = x.shape
    out = torch.empty(b, dtype=torch.int64, device=x.device)
    if b:
        _argmax_kernel[(b,)](x, x.stride(0), out, v, BLOCK=block_size(v), num_warps=_warps(v))
    return out
