"""Beam search step and beam KV reordering: spec and NumPy reference for `beam_step` and `kv_reorder_suffix`.

`beam_step` is one step of transformers 4.57's vectorised beam search (`GenerationMixin._beam_search`:
`_get_top_k_continuations`, `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
`_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`), on a beam state of fixed-shape
arrays (`pyengine.engine.beam_search.BeamState`, shapes there) that it updates in place:

1. log-probs: `log_softmax(logits)` in float32 (skipped when `log_softmax=False`: the caller already
   applied its processors). A row with a NaN or +inf logit, or no finite one, gives NaN everywhere, as
   torch's arithmetic does (`remove_invalid_values=True` avoids it).
2. processors the fused kernels know, in transformers' order: repetition penalty over the row's history
   `running[b, k, :cur_len]` (each id once; log-probs are <= 0, so it multiplies), EOS ids banned while
   `cur_len < min_len` (those inside the vocabulary; transformers accepts others, which never occur),
   `banned_ids` (single-token bad words) banned. `scores_out` (if given) receives
   the processed log-probs `[B*K, V]`: transformers' `scores` output.
3. `acc = log_probs + running_scores` over beams x vocabulary `[B, K*V]`; the top `K2 = max(2, 1 + n_eos)*K`
   candidates, ordered by score (NaN first, as torch.topk), ties to the lower flat index `k*V + token`
   (torch.topk leaves the order of equal scores unspecified; with real logits exact ties do not occur).
4. a candidate hits a stopping criterion when its token is an EOS id, when `cur_len + 1 >= max_length`,
   or when `stop_all` (max_time) is set.
5. live beams: the best K candidates after adding -1e9 to those that hit (float32 arithmetic, as
   transformers), their sequences and beam indices gathered from the source beams.
6. finished set: the candidates among the top K that hit, scored `score / (cur_len + 1 - prompt_len) **
   length_penalty`, -1e9 added when the batch item's finished set is full and `early_stopping` is True
   (mode 1), when it can no longer improve, and for the candidates that did not just finish; merged
   with the current set, keeping the best K (ties to the lower merged index: current set first).
7. early-stop heuristic on the new length: `best running / L ** length_penalty > worst finished`, with
   `L = max_length - prompt_len` for mode 2 ("never") and a positive length penalty, else the new number
   of generated tokens.

Returns `(parent, done)`: `parent` `[B*K]` int64, the flat row (`b*K + k`) each new live beam continues
(the KV cache reorder index); `done` whether the search ends here (no batch item can improve, or every
finished set is full with early_stopping True, or every candidate hit a criterion).

`early_stopping` is a mode: 0 (False), 1 (True), 2 ("never"); like transformers, a value that is neither
True nor "never" behaves as False (`pyengine.engine.beam_search` maps it).

`kv_reorder_suffix(caches, index, start, length)`: for each cache `[B, H, T, D]` (every layer's keys and
values), `cache[b, :, start[b]:length] = cache[index[b], :, start[b]:length]` for every row at once
(sources read before any row is written). A beam cache only needs the positions after the point where
a row's ancestry and its new parent's diverge; the rest is equal already
(`pyengine.backends.torch.cache.KVCache` tracks that point).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyengine.ops import logits as logits_ops

NEG = np.float32(-1.0e9)  # "never pick this", as transformers (finite: keeps the arithmetic finite)


def beams_to_keep(num_beams: int, n_eos: int) -> int:
    """K2: candidates kept per step, enough for K live beams even if the best ones all end in EOS."""
    return max(2, 1 + n_eos) * num_beams


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float32 log-softmax per row, `(x - max) - log(sum(exp(x - max)))` with torch's arithmetic: a row with a
    NaN or +inf logit, or no finite one, gives NaN everywhere."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x, axis=-1, keepdims=True)  # NaN propagates
        s = np.exp((x - m).astype(np.float64)).sum(axis=-1, keepdims=True)
        out = (x - m) - np.log(s).astype(np.float32)
    bad = ~np.isfinite(m) | np.isnan(x).any(axis=-1, keepdims=True)
    return np.where(bad, np.float32(np.nan), out).astype(np.float32)


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best per row: NaN first (torch.topk's order), then value descending; ties to the lower
    index."""
    nan = np.isnan(x)
    if nan.any() or k >= x.shape[-1]:
        return np.lexsort((np.where(nan, 0, -x), ~nan), axis=-1)[:, :k]
    # Same order without sorting whole rows (beam rows are K x V long): everything >= the k-th largest value
    # (ties at it included), then those few sorted by value descending, index ascending.
    kth = np.partition(x, x.shape[-1] - k, axis=-1)[:, x.shape[-1] - k]
    out = np.empty((x.shape[0], k), np.int64)
    for row in range(x.shape[0]):
        cand = np.flatnonzero(x[row] >= kth[row])
        out[row] = cand[np.lexsort((cand, -x[row, cand]))[:k]]
    return out


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`x[b, idx[b, j]]` over axis 1 (trailing axes kept)."""
    return x[np.arange(x.shape[0])[:, None], idx]


def beam_step(
    logits: np.ndarray,
    state: Any,
    cur_len: int,
    prompt_len: int,
    max_length: int,
    *,
    penalty: float = 1.0,
    min_len: int = 0,
    eos_token_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
    early_stopping: int = 0,
    stop_all: bool = False,
    log_softmax: bool = True,
    scores_out: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """One beam search step on `logits` `[B*K, V]`; updates `state` in place. See the module docstring."""
    B, K, T = state.running.shape
    V = logits.shape[1]
    S, cur = prompt_len, cur_len
    K2 = beams_to_keep(K, len(eos_token_ids))
    lp = _log_probs(logits, state.running, cur, log_softmax, penalty, min_len, eos_token_ids, banned_ids)
    if scores_out is not None:
        scores_out[...] = lp
    acc = (lp.reshape(B, K, V) + state.running_scores[:, :, None]).reshape(B, K * V)  # [B, K*V] float32

    # 3. top K2 continuations and their sequences / beam indices
    cand = _top(acc, K2)  # [B, K2] flat ids
    cand_scores = _gather(acc, cand)
    src, tok = cand // V, cand % V
    cand_seq = _gather(state.running, src)  # [B, K2, T]
    cand_seq[:, :, cur] = tok
    cand_idx = _gather(state.running_idx, src)  # [B, K2, T-S]
    cand_idx[:, :, cur - S] = src + np.arange(B)[:, None] * K

    # 4-5. which hit a criterion; the best K that did not become the live beams
    hits = np.isin(tok, list(eos_token_ids)) | (cur + 1 >= max_length) | bool(stop_all)
    live = cand_scores + hits.astype(np.float32) * NEG
    pick = _top(live, K)
    state.running[...] = _gather(cand_seq, pick)
    state.running_scores[...] = _gather(live, pick)
    state.running_idx[...] = _gather(cand_idx, pick)

    # 6. merge the top K that just finished into the finished set
    just_done = hits & (np.arange(K2) < K)[None, :]
    norm = cand_scores / np.float32(float(cur + 1 - S) ** length_penalty)
    full = state.is_finished.all(axis=1, keepdims=True) & (early_stopping == 1)
    norm = norm + full.astype(np.float32) * NEG
    norm = norm + (~state.improvable[:, None]).astype(np.float32) * NEG
    norm = norm + (~just_done).astype(np.float32) * NEG
    merged = np.concatenate([state.beam_scores, norm.astype(np.float32)], axis=1)
    keep = _top(merged, K)
    state.sequences[...] = _gather(np.concatenate([state.sequences, cand_seq], axis=1), keep)
    state.beam_scores[...] = _gather(merged, keep)
    state.beam_idx[...] = _gather(np.concatenate([state.beam_idx, cand_idx], axis=1), keep)
    state.is_finished[...] = _gather(np.concatenate([state.is_finished, just_done], axis=1), keep)

    # 7. early-stop heuristic at the new length, and the search's end
    new_len = cur + 1
    best_len = max_length - S if early_stopping == 2 and length_penalty > 0.0 else new_len - S
    best_running = state.running_scores[:, 0] / np.float32(float(best_len) ** length_penalty)  # [B]
    worst = np.where(state.is_finished, state.beam_scores.min(axis=1, keepdims=True), NEG)  # [B, K]
    state.improvable &= (best_running[:, None] > worst).any(axis=1)
    done = not (state.improvable.any() and not (state.is_finished.all() and early_stopping == 1) and not hits.all())
    parent = state.running_idx[:, :, cur - S].reshape(B * K).astype(np.int64)
    return parent, done


def _log_probs(logits, running, cur, apply_log_softmax, penalty, min_len, eos_token_ids, banned_ids) -> np.ndarray:
    """Steps 1-2: `[B*K, V]` float32 log-probs after the processors."""
    N = logits.shape[0]
    lp = log_softmax(logits) if apply_log_softmax else np.array(logits, np.float32)
    if penalty != 1.0:
        lp = logits_ops.repetition_penalty(lp, running[:, :, :cur].reshape(N, cur), np.float32(penalty))
    live_eos = [e for e in eos_token_ids if 0 <= e < lp.shape[1]]  # an id outside the vocabulary never comes
    if cur < min_len and live_eos:
        lp[:, live_eos] = -np.inf
    if len(banned_ids):
        lp[:, list(banned_ids)] = -np.inf
    return lp


def kv_reorder_suffix(caches: Sequence[np.ndarray], index: np.ndarray, start: np.ndarray, length: int) -> None:
    """For each cache `[B, H, T, D]`: `cache[b, :, start[b]:length] = cache[index[b], :, start[b]:length]` for
    all rows at once (every source read before any row is written), in place."""
    for cache in caches:
        old = cache.copy()
        for b in range(cache.shape[0]):
            s = int(start[b])
            if s < length:
                cache[b, :, s:length] = old[int(index[b]), :, s:length]
