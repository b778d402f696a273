"""Fused processors + selection: spec and NumPy reference (float64) for `fused_sample` / `fused_argmax`.

One call serves a batch of requests with different settings: every parameter is per row. Per row, in
transformers' order (RepetitionPenalty, MinLength, NoBadWords (single tokens), Temperature, TopK, TopP,
MinP; see `GenerationMixin._get_logits_processor`):

1. repetition penalty over the row's history `tokens[row, :cur_len[row]]`, in float32 as transformers
   computes it on float32 logits (1.0 = off);
2. EOS ids banned while `cur_len < min_len`; `banned_ids` (single-token bad words) always banned;
3. from here on float64: temperature (1.0 = off), top-k (0 = off; ties at the k-th value kept), top-p
   (1.0 = off), min-p (0.0 = off), each with `min_tokens_to_keep`, exactly as `pyengine.ops.sampling`;
4. draw: inverse CDF over softmax in vocabulary index order with `u = uniform(seed[row], step[row])`
   (`pyengine.ops.random`), i.e. `sample_from_scores`. A row with no finite score draws token 0.

`fused_argmax` applies steps 1-2 and takes the argmax (ties to the lowest id): the warpers of step 3
never change the argmax, and transformers applies them only when sampling.

Kernels need no vocabulary sort: top-k is a selection, top-p a bisection on the probability mass
(csrc/include/pyengine/fused.h). Against this reference a kernel's id is exact unless u falls within
1e-6 of a CDF value (float32 inputs, exp and summation order differ in the last bits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pyengine.ops import logits, random, sampling


def _per_row(value, batch: int, dtype) -> np.ndarray:
    out = np.broadcast_to(np.asarray(value, dtype=dtype), (batch,))
    return np.ascontiguousarray(out)


def processed_row(
    scores: np.ndarray, tokens: np.ndarray, row: int, cur_len, penalty, min_len, eos_token_ids, banned_ids
) -> np.ndarray:
    """Steps 1-2 for one row: `[1, V]` float64."""
    x = scores[row : row + 1].astype(np.float32)
    if penalty[row] != 1.0:
        x = logits.repetition_penalty(x, tokens[row : row + 1, : cur_len[row]], np.float32(penalty[row]))
    x = x.astype(np.float64)
    if cur_len[row] < min_len[row] and len(eos_token_ids):
        x[:, list(eos_token_ids)] = -np.inf
    if len(banned_ids):
        x[:, list(banned_ids)] = -np.inf
    return x


def fused_sample(
    scores: np.ndarray,
    tokens: np.ndarray,
    cur_len=None,
    penalty=1.0,
    min_len=0,
    eos_token_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    seed=0,
    step=0,
    min_tokens_to_keep: int = 1,
) -> np.ndarray:
    """Draw one token per row `[B]` (int64) after the per-row processors; see the module docstring.

    Args:
        scores: `[B, V]` float32 logits.
        tokens: `[B, T]` int64 history (prompt + generated); row b's history is its first `cur_len[b]` ids.
        cur_len: `[B]` history lengths (default: T for every row).
        penalty, min_len, temperature, top_k, top_p, min_p, seed, step: scalars or `[B]` per-row values.
        eos_token_ids, banned_ids: id lists shared by the batch.
        min_tokens_to_keep: as in transformers' warpers.
    """
    b, t = scores.shape[0], tokens.shape[1]
    cur_len = _per_row(t if cur_len is None else cur_len, b, np.int64)
    pen, mlen = _per_row(penalty, b, np.float64), _per_row(min_len, b, np.int64)
    temp, k, p, mp = (_per_row(v, b, d) for v, d in ((temperature, np.float64), (top_k, np.int64), (top_p, np.float64), (min_p, np.float64)))
    seeds, steps = _per_row(seed, b, np.int64), _per_row(step, b, np.int64)
    out = np.zeros(b, np.int64)
    for row in range(b):
        x = processed_row(scores, tokens, row, cur_len, pen, mlen, eos_token_ids, banned_ids)
        if not np.isfinite(x).any():
            continue
        x = logits.temperature(x, temp[row])
        if k[row] > 0:
            x = sampling.top_k_mask(x, int(k[row]), min_tokens_to_keep=min_tokens_to_keep)
        if p[row] < 1.0:
            x = sampling.top_p_mask(x, float(p[row]), min_tokens_to_keep=min_tokens_to_keep)
        if mp[row] > 0.0:
            x = sampling.min_p_mask(x, float(mp[row]), min_tokens_to_keep=min_tokens_to_keep)
        u = np.array([random.uniform(int(seeds[row]), int(steps[row]))])
        out[row] = sampling.sample_from_scores(x, u)[0]
    return out


def fused_argmax(
    scores: np.ndarray,
    tokens: np.ndarray,
    cur_len=None,
    penalty=1.0,
    min_len=0,
    eos_token_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
) -> np.ndarray:
    """Greedy selection `[B]` after repetition penalty, min-length EOS ban and banned ids."""
    b, t = scores.shape[0], tokens.shape[1]
    cur_len = _per_row(t if cur_len is None else cur_len, b, np.int64)
    pen, mlen = _per_row(penalty, b, np.float64), _per_row(min_len, b, np.int64)
    rows = [processed_row(scores, tokens, r, cur_len, pen, mlen, eos_token_ids, banned_ids) for r in range(b)]
    return np.array([int(np.argmax(r[0])) for r in rows], np.int64)
