"""Beam search and beam sampling: transformers 4.57's vectorised algorithm, framework-neutral.

State per batch item `b` (`BeamState`; K = num_beams, K2 = beams kept per step = max(2, 1 + n_eos) * K):
    running          [B, K, T]   the live beams (prompt + tokens so far)
    running_scores   [B, K]      their summed log-probs (beams 1.. start at -1e9 so step 0 uses beam 0)
    running_idx      [B, K, T-S] which flat row each token came from
    sequences / beam_scores / beam_idx / is_finished  [B, K, ...]  the best finished hypotheses
    improvable       [B]         can a live beam still beat the worst finished one?

Each step, in order:
    1. logits of the live beams -> log_softmax -> processors (and warpers when sampling).
    2. add running scores; take the top K2 of the K*V candidates (or draw K2 without replacement).
    3. a candidate "finishes" when it hits a stopping criterion (EOS, max length, user criteria).
    4. the best K unfinished candidates become the new live beams (the cache is reordered to them).
    5. finished candidates among the top K, length-normalised by `generated_len ** length_penalty`,
       merge with the finished set, keeping the best K.
    6. stop when no live beam can beat the worst finished one (the early-stop heuristic), when every
       beam finished and `early_stopping=True`, or when every candidate hit a criterion.

Beam search (not sampling) with the processors the fused kernels know and no user stopping criteria runs
each step as the one op `beam_step` (spec: `pyengine.ops.beam`; C++ on torch): log-softmax, processors,
top-K2 and the bookkeeping in one call. Other plans apply their processors here, then hand the
log-probs to `beam_step` (`log_softmax=False`) unless they sample or have user criteria, which take the
step-by-step path below (`_select` + `update_beams`), itself the `native` torch implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyengine.backends.base import Array, Backend
from pyengine.engine.plan import DecodePlan
from pyengine.engine.plan import _fuse_common as fuse_common  # the processors the fused kernels know

NEG = -1.0e9  # "never pick this", as transformers uses (not -inf: keeps arithmetic finite)


@dataclass
class BeamState:
    """Fixed-shape beam search state; `beam_step` updates it in place (shapes in the module docstring)."""

    running: Array  # [B, K, T] int64
    running_scores: Array  # [B, K] float32
    running_idx: Array  # [B, K, T-S] int64, -1 = not generated
    sequences: Array  # [B, K, T] int64
    beam_scores: Array  # [B, K] float32
    beam_idx: Array  # [B, K, T-S] int64
    is_finished: Array  # [B, K] bool
    improvable: Array  # [B] bool


@dataclass
class BeamResult:
    sequences: Array  # [B*n, T_out]
    sequences_scores: Array  # [B*n]
    beam_indices: Array  # [B*n, T_out - S]
    scores: tuple[Array, ...] | None
    logits: tuple[Array, ...] | None


@dataclass
class StepArgs:
    """The per-call arguments of `beam_step` besides logits, state and cur_len (see `pyengine.ops.beam`)."""

    prompt_len: int
    max_length: int
    penalty: float = 1.0
    min_len: int = 0
    eos_token_ids: tuple[int, ...] = ()
    banned_ids: tuple[int, ...] = ()
    length_penalty: float = 1.0
    early_stopping: int = 0
    log_softmax: bool = True
    extra: list[Any] = field(default_factory=list)  # processors beam_step does not fuse, applied first

    def kwargs(self, stop_all: bool) -> dict[str, Any]:
        return dict(penalty=self.penalty, min_len=self.min_len, eos_token_ids=self.eos_token_ids,
                    banned_ids=self.banned_ids, length_penalty=self.length_penalty,
                    early_stopping=self.early_stopping, stop_all=stop_all, log_softmax=self.log_softmax)  # fmt: skip


def init_state(be: Backend, prompt: Array, num_beams: int, max_length: int, fill: int) -> BeamState:
    """The state before the first step for `prompt` `[B*K, S]` (each input repeated K times)."""
    K, T = num_beams, max_length
    B, S = prompt.shape[0] // K, prompt.shape[1]
    running = be.full((B, K, T), fill, "int64")
    running[:, :, :S] = be.reshape(prompt, (B, K, S))
    running_scores = be.full((B, K), 0.0, "float32")
    running_scores[:, 1:] = NEG
    running_idx = be.full((B, K, T - S), -1, "int64")
    return BeamState(
        running=running, running_scores=running_scores, running_idx=running_idx, sequences=be.copy(running),
        beam_scores=be.full((B, K), NEG, "float32"), beam_idx=be.copy(running_idx),
        is_finished=be.full((B, K), False, "bool"), improvable=be.full((B,), True, "bool"),
    )  # fmt: skip


def fuse_beam(plan: DecodePlan, prompt_len: int, early_stopping: bool | str, length_penalty: float) -> StepArgs | None:
    """`beam_step` arguments for `plan`, or None when the step-by-step path is needed (beam sampling, user
    stopping criteria). Processors beyond repetition penalty, min length and single-token bad words go to
    `extra`: applied before the op, which then skips its log-softmax."""
    if plan.strategy != "greedy" or plan.stopping:
        return None
    args = StepArgs(prompt_len, plan.max_length, eos_token_ids=tuple(plan.eos_token_ids),
                    length_penalty=float(length_penalty), early_stopping=_mode(early_stopping))  # fmt: skip
    fused: dict[str, Any] = {}
    if not all(fuse_common(spec, fused) for spec in plan.processors):
        args.extra, args.log_softmax = list(plan.processors), False
        return args
    args.penalty = fused.get("penalty", 1.0)
    args.min_len = fused.get("min_len", 0)  # the op bans the in-vocabulary EOS ids: MinLength's own list
    args.banned_ids = tuple(fused.get("banned_ids", ()))
    return args


def _mode(early_stopping: bool | str) -> int:
    """transformers' early_stopping as beam_step's mode: 1 for True, 2 for "never", 0 otherwise (as False)."""
    if early_stopping is True:
        return 1
    return 2 if early_stopping == "never" else 0


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
    # transformers' `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`, quirks included
    # (a pad id of 0 falls through to EOS; without EOS the filler is -1).
    fill = (plan.pad_token_id or plan.eos_token_ids[0]) if plan.eos_token_ids else -1
    state = init_state(be, prompt, K, T, fill)
    fused = fuse_beam(plan, S, early_stopping, length_penalty)
    scores_out: list[Array] = []
    logits_out: list[Array] = []

    deadline = None if plan.max_time is None else time.monotonic() + plan.max_time
    cur, done = S, False
    while not (plan.sync(done) if plan.sync is not None else done):
        history = be.reshape(state.running[:, :, :cur], (B * K, cur))
        if done:  # synced_gpus: finished here, others still running
            step_fn.idle(history)
            continue
        logits = step_fn(history)  # [B*K, V]
        if plan.output_logits:
            logits_out.append(logits)
        timed_out = deadline is not None and time.monotonic() > deadline
        if fused is not None:
            scores = logits
            if not fused.log_softmax:
                scores = be.log_softmax(logits)
                for spec in fused.extra:
                    scores = spec(be.ops, history, scores)
            out = be.full(tuple(logits.shape), 0.0, "float32") if plan.output_scores else None
            parent, done = be.ops.beam_step(scores, state, cur, S, T, scores_out=out, **fused.kwargs(timed_out))
            if out is not None:
                scores_out.append(out)
        else:
            parent, done = _step_by_step(plan, be, state, logits, history, cur, S, T, scores_out, rng, timed_out,
                                         length_penalty, _mode(early_stopping))  # fmt: skip
        if reorder is not None:
            reorder(parent)
        cur += 1

    n = num_return_sequences
    sequences = be.reshape(state.sequences[:, :n], (B * n, T))
    beam_scores = be.reshape(state.beam_scores[:, :n], (B * n,))
    beam_idx = be.reshape(state.beam_idx[:, :n], (B * n, T - S))
    generated = be.max_int(be.sum_axis(be.cast(beam_idx != -1, "int64"), axis=1))
    return BeamResult(
        sequences=sequences[:, : S + generated],
        sequences_scores=beam_scores,
        beam_indices=beam_idx[:, :generated],
        scores=tuple(scores_out) if plan.output_scores else None,
        logits=tuple(logits_out) if plan.output_logits else None,
    )


def _step_by_step(
    plan: DecodePlan, be: Backend, state: BeamState, logits: Array, history: Array, cur: int, S: int, T: int,
    scores_out: list[Array], rng: Any, timed_out: bool, length_penalty: float, mode: int,
) -> tuple[Array, bool]:
    """One step with any processors, beam sampling and user stopping criteria."""
    log_probs = be.log_softmax(logits)
    for spec in plan.processors:
        log_probs = spec(be.ops, history, log_probs)
    if plan.output_scores:
        scores_out.append(log_probs)
    B, K = state.running_scores.shape
    K2 = max(2, 1 + len(plan.eos_token_ids)) * K
    cand_scores, cand = _select(plan, be, log_probs, state.running_scores, K2, rng)
    V = log_probs.shape[-1]
    cand_seq = be.take_along(state.running, cand // V, axis=1)  # [B, K2, T]
    cand_seq[:, :, cur] = cand % V
    hits = _hits_stopping(plan, be, be.reshape(cand_seq[:, :, : cur + 1], (B * K2, cur + 1)), scores_out, T, timed_out)
    hits = be.reshape(hits, (B, K2))
    return update_beams(be, state, cand_scores, cand, hits, V, cur, S, T, length_penalty, mode, cand_seq=cand_seq)


def _select(plan: DecodePlan, be: Backend, log_probs: Array, running_scores: Array, k2: int, rng: Any):
    """The K2 candidates `[B, K2]` (scores, flat ids over K*V): top-k, or drawn without replacement."""
    B, K = running_scores.shape
    V = log_probs.shape[-1]
    acc = be.reshape(be.reshape(log_probs, (B, K, V)) + running_scores[:, :, None], (B, K * V))
    if plan.strategy == "sample":
        cand = be.sample_without_replacement(acc, k2, rng)  # [B, K2]
        return be.take_along(acc, cand, axis=1), cand
    return be.topk(acc, k2)


def update_beams(
    be: Backend, state: BeamState, cand_scores: Array, cand: Array, hits: Array, V: int, cur: int, S: int, T: int,
    length_penalty: float, mode: int, cand_seq: Array | None = None,
) -> tuple[Array, bool]:
    """Steps 3-6 for the candidates `cand` `[B, K2]` (flat ids) whose stopping hits are `hits` `[B, K2]`.

    Updates `state` in place (fields reassigned) and returns `(parent [B*K], done)` as `beam_step`.
    """
    B, K = state.running_scores.shape
    K2 = cand.shape[1]
    src = cand // V  # [B, K2]
    cand_idx = be.take_along(state.running_idx, src, axis=1)  # [B, K2, T-S]
    if cand_seq is None:
        cand_seq = be.take_along(state.running, src, axis=1)  # [B, K2, T]
        cand_seq[:, :, cur] = cand % V
    cand_idx[:, :, cur - S] = src + be.arange(B)[:, None] * K

    # 4. next live beams: the best K candidates that did not finish
    live_scores = cand_scores + be.cast(hits, "float32") * NEG
    _, pick = be.topk(live_scores, K)
    state.running = be.take_along(cand_seq, pick, axis=1)
    state.running_scores = be.take_along(live_scores, pick, axis=1)
    state.running_idx = be.take_along(cand_idx, pick, axis=1)

    # 5. merge newly finished (top K only) into the finished set
    just_done = hits & (be.arange(K2) < K)[None, :]
    norm = cand_scores / float((cur + 1 - S) ** length_penalty)
    norm = norm + be.cast(be.all_axis(state.is_finished, axis=-1, keepdims=True) & (mode == 1), "float32") * NEG
    norm = norm + be.cast(~state.improvable[:, None], "float32") * NEG
    norm = norm + be.cast(~just_done, "float32") * NEG
    merged_scores = be.cat([state.beam_scores, norm], axis=1)
    _, keep = be.topk(merged_scores, K)
    state.sequences = be.take_along(be.cat([state.sequences, cand_seq], axis=1), keep, axis=1)
    state.beam_scores = be.take_along(merged_scores, keep, axis=1)
    state.beam_idx = be.take_along(be.cat([state.beam_idx, cand_idx], axis=1), keep, axis=1)
    state.is_finished = be.take_along(be.cat([state.is_finished, just_done], axis=1), keep, axis=1)

    # 6. stop? (the early-stop heuristic on the new length: transformers' `_check_early_stop_heuristic`)
    best_len = T - S if mode == 2 and length_penalty > 0.0 else cur + 1 - S
    best_running = state.running_scores[:, :1] / float(best_len**length_penalty)  # [B, 1]
    worst_finished = be.where(state.is_finished, be.min_axis(state.beam_scores, axis=1, keepdims=True), NEG)
    state.improvable = state.improvable & be.any_axis(best_running > worst_finished, axis=-1)
    can_improve = be.any(state.improvable)
    open_beam = not (be.all(state.is_finished) and mode == 1)
    done = not (can_improve and open_beam and not be.all(hits))
    return be.reshape(state.running_idx[:, :, cur - S], (B * K,)), done


def _hits_stopping(
    plan: DecodePlan, be: Backend, seqs: Array, scores: list[Array], max_length: int, timed_out: bool
) -> Array:
    """Per candidate `[N]`: max length or max_time reached, last token is EOS, or a user criterion fired."""
    n, length = seqs.shape
    hits = be.full((n,), length >= max_length or timed_out, "bool")
    if plan.eos_token_ids:
        hits = hits | be.isin(seqs[:, -1], list(plan.eos_token_ids))
    for criterion in plan.stopping:
        hits = hits | criterion(seqs, tuple(scores) or None)
    return hits


def beam_step_native(
    be: Backend, logits: Array, state: BeamState, cur_len: int, prompt_len: int, max_length: int, *,
    penalty: float = 1.0, min_len: int = 0, eos_token_ids: tuple[int, ...] = (), banned_ids: tuple[int, ...] = (),
    length_penalty: float = 1.0, early_stopping: int = 0, stop_all: bool = False, log_softmax: bool = True,
    scores_out: Array | None = None,
) -> tuple[Array, bool]:
    """`beam_step` (spec: `pyengine.ops.beam`) from the backend's primitives and processor ops."""
    B, K, _ = state.running.shape
    cur, V = cur_len, logits.shape[-1]
    history = be.reshape(state.running[:, :, :cur], (B * K, cur))
    lp = be.log_softmax(logits) if log_softmax else be.copy(logits)
    if penalty != 1.0:
        lp = be.ops.repetition_penalty(lp, history, penalty)
    banned = list(banned_ids) + ([e for e in eos_token_ids if 0 <= e < V] if cur < min_len else [])
    if banned:
        lp[:, banned] = -float("inf")
    if scores_out is not None:
        scores_out[...] = lp
    K2 = max(2, 1 + len(eos_token_ids)) * K
    acc = be.reshape(be.reshape(lp, (B, K, V)) + state.running_scores[:, :, None], (B, K * V))
    cand_scores, cand = be.topk(acc, K2)
    hits = be.isin(cand % V, list(eos_token_ids)) if eos_token_ids else be.full(tuple(cand.shape), False, "bool")
    if cur + 1 >= max_length or stop_all:
        hits = be.full(tuple(cand.shape), True, "bool")
    return update_beams(be, state, cand_scores, cand, hits, V, cur, prompt_len, max_length, length_penalty, early_stopping)
