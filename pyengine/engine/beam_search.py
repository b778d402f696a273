"""Beam search and beam sampling: transformers 4.57's vectorised algorithm, framework-neutral.

State per batch item `b` (K = num_beams, K2 = beams kept per step = max(2, 1 + n_eos) * K):
    running_sequences    [B, K, T]   the live beams (prompt + tokens so far)
    running_scores       [B, K]      their summed log-probs (beams 1.. start at -1e9 so step 0 uses beam 0)
    running_beam_indices [B, K, T-S] which flat row each token came from
    sequences / beam_scores / beam_indices / is_finished  [B, K, ...]  the best finished hypotheses

Each step, in order:
    1. logits of the live beams -> log_softmax -> processors (and warpers when sampling).
    2. add running scores; take the top K2 of the K*V candidates (or draw K2 without replacement).
    3. a candidate "finishes" when it hits a stopping criterion (EOS, max length, user criteria).
    4. the best K unfinished candidates become the new live beams (the cache is reordered to them).
    5. finished candidates among the top K, length-normalised by `generated_len ** length_penalty`,
       merge with the finished set, keeping the best K.
    6. stop when no live beam can beat the worst finished one (the early-stop heuristic), when every
       beam finished and `early_stopping=True`, or when every candidate hit a criterion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.backends.base import Array, Backend
from pyengine.engine.plan import DecodePlan

NEG = -1.0e9  # "never pick this", as transformers uses (not -inf: keeps arithmetic finite)


@dataclass
class BeamResult:
    sequences: Array  # [B*n, T_out]
    sequences_scores: Array  # [B*n]
    beam_indices: Array  # [B*n, T_out - S]
    scores: tuple[Array, ...] | None
    logits: tuple[Array, ...] | None


def run_beam(
    plan: DecodePlan,
    step_fn: Callable[[Array], Array],
    backend: Backend,
    prompt: Array,
    *,
    num_beams: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: bool | str,
    rng: Any = None,
    reorder: Callable[[Array], None] | None = None,
) -> BeamResult:
    """Beam search over `prompt` `[B*K, S]` (each input repeated K times, as transformers expands it)."""
    be, K = backend, num_beams
    flat, S = prompt.shape[0], prompt.shape[1]
    B, T = flat // K, plan.max_length
    K2 = max(2, 1 + len(plan.eos_token_ids)) * K
    # transformers' `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`, quirks included
    # (a pad id of 0 falls through to EOS; without EOS the filler is -1).
    fill = (plan.pad_token_id or plan.eos_token_ids[0]) if plan.eos_token_ids else -1
    top_k_mask = be.arange(K2) < K  # [K2]

    running = be.full((B, K, T), fill, "int64")
    running[:, :, :S] = be.reshape(prompt, (B, K, S))
    sequences = be.copy(running)
    running_scores = be.full((B, K), 0.0, "float32")
    running_scores[:, 1:] = NEG
    beam_scores = be.full((B, K), NEG, "float32")
    is_finished = be.full((B, K), False, "bool")
    improvable = be.full((B, 1), True, "bool")
    running_idx = be.full((B, K, T - S), -1, "int64")
    beam_idx = be.copy(running_idx)
    scores_out: list[Array] = []
    logits_out: list[Array] = []

    deadline = None if plan.max_time is None else time.monotonic() + plan.max_time
    cur, done = S, False
    while not (plan.sync(done) if plan.sync is not None else done):
        history = be.reshape(running[:, :, :cur], (B * K, cur))
        if done:  # synced_gpus: finished here, others still running
            step_fn.idle(history)
            continue
        logits = step_fn(history)  # [B*K, V]
        log_probs = be.log_softmax(logits)
        for spec in plan.processors:
            log_probs = spec(be.ops, history, log_probs)
        if plan.output_logits:
            logits_out.append(logits)
        if plan.output_scores:
            scores_out.append(log_probs)
        V = log_probs.shape[-1]
        acc = be.reshape(be.reshape(log_probs, (B, K, V)) + running_scores[:, :, None], (B, K * V))

        # 2. top K2 continuations over all beams
        if plan.strategy == "sample":
            cand = be.sample_without_replacement(acc, K2, rng)  # [B, K2]
            cand_scores = be.take_along(acc, cand, axis=1)
        else:
            cand_scores, cand = be.topk(acc, K2)
        src_beam = cand // V  # [B, K2]
        cand_idx = be.take_along(running_idx, src_beam, axis=1)  # [B, K2, T-S]
        cand_seq = be.take_along(running, src_beam, axis=1)  # [B, K2, T]
        cand_seq[:, :, cur] = cand % V
        cand_idx[:, :, cur - S] = src_beam + be.arange(B)[:, None] * K

        # 3. which candidates finish here
        hits = _hits_stopping(plan, be, be.reshape(cand_seq[:, :, : cur + 1], (B * K2, cur + 1)), scores_out, T, deadline)
        hits = be.reshape(hits, (B, K2))

        # 4. next live beams: the best K candidates that did not finish
        live_scores = cand_scores + be.cast(hits, "float32") * NEG
        _, pick = be.topk(live_scores, K)
        running = be.take_along(cand_seq, pick, axis=1)
        running_scores = be.take_along(live_scores, pick, axis=1)
        running_idx = be.take_along(cand_idx, pick, axis=1)

        # 5. merge newly finished (top K only) into the finished set
        just_done = hits & top_k_mask[None, :]
        norm = cand_scores / float((cur + 1 - S) ** length_penalty)
        full = be.all_axis(is_finished, axis=-1, keepdims=True) & (early_stopping is True)
        norm = norm + be.cast(full, "float32") * NEG
        norm = norm + be.cast(~improvable, "float32") * NEG
        norm = norm + be.cast(~just_done, "float32") * NEG
        merged_scores = be.cat([beam_scores, norm], axis=1)
        _, keep = be.topk(merged_scores, K)
        sequences = be.take_along(be.cat([sequences, cand_seq], axis=1), keep, axis=1)
        beam_scores = be.take_along(merged_scores, keep, axis=1)
        beam_idx = be.take_along(be.cat([beam_idx, cand_idx], axis=1), keep, axis=1)
        is_finished = be.take_along(be.cat([is_finished, just_done], axis=1), keep, axis=1)

        if reorder is not None:
            reorder(be.reshape(running_idx[:, :, cur - S], (B * K,)))
        cur += 1

        # 6. stop?
        improvable = _early_stop_unsatisfied(
            be, improvable, running_scores, beam_scores, is_finished, cur, T, S, early_stopping, length_penalty
        )
        can_improve = be.any(improvable)
        open_beam = not (be.all(is_finished) and early_stopping is True)
        continuations = not be.all(hits)
        done = not (can_improve and open_beam and continuations)

    n = num_return_sequences
    sequences = be.reshape(sequences[:, :n], (B * n, T))
    beam_scores = be.reshape(beam_scores[:, :n], (B * n,))
    beam_idx = be.reshape(beam_idx[:, :n], (B * n, T - S))
    generated = be.max_int(be.sum_axis(be.cast(beam_idx != -1, "int64"), axis=1))
    return BeamResult(
        sequences=sequences[:, : S + generated],
        sequences_scores=beam_scores,
        beam_indices=beam_idx[:, :generated],
        scores=tuple(scores_out) if plan.output_scores else None,
        logits=tuple(logits_out) if plan.output_logits else None,
    )


def _hits_stopping(
    plan: DecodePlan, be: Backend, seqs: Array, scores: list[Array], max_length: int, deadline: float | None
) -> Array:
    """Per candidate `[N]`: max length or max_time reached, last token is EOS, or a user criterion fired."""
    n, length = seqs.shape
    timed_out = deadline is not None and time.monotonic() > deadline
    hits = be.full((n,), length >= max_length or timed_out, "bool")
    if plan.eos_token_ids:
        hits = hits | be.isin(seqs[:, -1], list(plan.eos_token_ids))
    for criterion in plan.stopping:
        hits = hits | criterion(seqs, tuple(scores) or None)
    return hits


def _early_stop_unsatisfied(
    be: Backend, unsatisfied: Array, running_scores: Array, beam_scores: Array, is_finished: Array,
    cur: int, max_length: int, prompt_len: int, early_stopping: bool | str, length_penalty: float,
) -> Array:
    """Can the best live beam still beat the worst finished one? (transformers' heuristic)"""
    if early_stopping == "never" and length_penalty > 0.0:
        best_len = max_length - prompt_len
    else:
        best_len = cur - prompt_len
    best_running = running_scores[:, :1] / float(best_len**length_penalty)  # [B, 1]
    worst_finished = be.where(is_finished, be.min_axis(beam_scores, axis=1, keepdims=True), NEG)
    return unsatisfied & be.any_axis(best_running > worst_finished, axis=-1, keepdims=True)
