"""Group (diverse) beam search: transformers 4.40's algorithm, framework-neutral.

The K beams split into G groups of K/G. Each step runs the model once for all beams, then the groups in
order: log_softmax, processors (the Hamming diversity penalty sees the tokens earlier groups picked this
step), add beam scores, top 2*(K/G) candidates per batch item, and the classic `BeamSearchScorer.process`.
The cache is reordered once per step with the combined indices. `finalize` picks the best hypotheses
across groups.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.backends.base import Array, Backend
from pyengine.engine import processors as P
from pyengine.engine.beam_scorer import BeamSearchScorer
from pyengine.engine.plan import DecodePlan


@dataclass
class GroupBeamResult:
    sequences: Array
    sequences_scores: Array
    beam_indices: Array | None
    scores: tuple[Array, ...] | None
    logits: tuple[Array, ...] | None


def run_group_beam(
    plan: DecodePlan,
    step_fn: Callable[[Array], Array],
    backend: Backend,
    prompt: Array,
    scorer: BeamSearchScorer,
    reorder: Callable[[Array], None] | None = None,
    do_sample: bool = False,
    rng: Any = None,
) -> GroupBeamResult:
    """Decode `prompt` `[B*K, S]` (each input repeated K times) with `scorer`.

    With one group this is transformers 4.40's classic `beam_search`; with `do_sample` (one group only)
    its `beam_sample`: candidates are drawn without replacement from softmax of the accumulated scores,
    then ranked by score.
    """
    be, K, G = backend, scorer.num_beams, scorer.num_beam_groups
    sub = K // G
    flat, S = prompt.shape[0], prompt.shape[1]
    B = flat // K
    input_ids = prompt
    beam_scores = be.full((B, K), -1e9, "float32")
    beam_scores[:, ::sub] = 0
    if do_sample:  # 4.40's beam_sample starts every beam at 0: the draws already differ per beam
        beam_scores[:] = 0
    beam_scores = be.reshape(beam_scores, (B * K,))
    track = plan.output_scores
    beam_indices = [tuple(() for _ in range(sub * B)) for _ in range(G)] if track else None
    scores_out: list[Array] = []
    logits_out: list[Array] = []
    eos = list(plan.eos_token_ids) or None
    deadline = None if plan.max_time is None else time.monotonic() + plan.max_time
    done = False
    while not (plan.sync(done) if plan.sync is not None else done):
        if done:  # synced_gpus: finished here, others still running
            step_fn.idle(input_ids)
            continue
        current = be.full((B * K,), 0, "int64")
        reordering = be.full((B * K,), 0, "int64")
        logits = step_fn(input_ids)  # [B*K, V]
        processed = be.full(tuple(logits.shape), 0.0, "float32") if track else None
        for g in range(G):
            rows = be.asarray([b * K + i for b in range(B) for i in range(g * sub, (g + 1) * sub)], "int64")
            group_ids = input_ids[rows]
            scores = be.log_softmax(logits[rows])
            for spec in plan.processors:
                scores = P.apply(spec, be.ops, group_ids, scores, current_tokens=current, beam_group_idx=g)
            if track:
                processed[rows] = scores
            V = scores.shape[-1]
            cand = be.reshape(scores + beam_scores[rows][:, None], (B, sub * V))
            n_cand = max(2, 1 + len(plan.eos_token_ids)) * sub
            if do_sample:  # 4.40's beam_sample always draws 2 * num_beams
                n_cand = 2 * sub
                drawn = be.sample_without_replacement(cand, n_cand, rng)
                cand_scores, order = be.topk(be.take_along(cand, drawn, axis=1), n_cand)  # sort descending
                cand_ids = be.take_along(drawn, order, axis=1)
            else:
                cand_scores, cand_ids = be.topk(cand, n_cand)
            out = scorer.process(
                group_ids, cand_scores, cand_ids % V, cand_ids // V, pad_token_id=plan.pad_token_id,
                eos_token_id=eos, beam_indices=sum(beam_indices, ()) if track else None, group_index=g,
                decoder_prompt_len=S,
            )
            beam_scores[rows] = out["next_beam_scores"]
            picked = out["next_beam_indices"]
            if track:
                picked_l = be.to_list(picked)
                beam_indices[g] = tuple(beam_indices[g][picked_l[i]] + (picked_l[i],) for i in range(len(beam_indices[0])))
            input_ids[rows] = group_ids[picked]
            current[rows] = out["next_beam_tokens"]
            reordering[rows] = K * (picked // sub) + g * sub + (picked % sub)
        if track:
            scores_out.append(processed)
        if plan.output_logits:
            logits_out.append(logits)
        input_ids = be.cat([input_ids, be.reshape(current, (B * K, 1))], axis=1)
        if reorder is not None:
            reorder(reordering)
        timed_out = deadline is not None and time.monotonic() > deadline
        done = scorer.is_done or timed_out or _all_stop(plan, be, input_ids, scores_out)
    result = scorer.finalize(
        input_ids, beam_scores, None, None, max_length=plan.max_length, pad_token_id=plan.pad_token_id,
        eos_token_id=eos, beam_indices=sum(beam_indices, ()) if track else None, decoder_prompt_len=S,
    )
    return GroupBeamResult(
        sequences=result["sequences"],
        sequences_scores=result["sequence_scores"],
        beam_indices=result["beam_indices"],
        scores=tuple(scores_out) if track else None,
        logits=tuple(logits_out) if plan.output_logits else None,
    )


def _all_stop(plan: DecodePlan, be: Backend, input_ids: Array, scores: list[Any]) -> bool:
    """transformers 4.40: stop when every row meets a criterion (max length, EOS last, user criteria)."""
    n, length = input_ids.shape
    hits = be.full((n,), length >= plan.max_length, "bool")
    if plan.eos_token_ids:
        hits = hits | be.isin(input_ids[:, -1], list(plan.eos_token_ids))
    for criterion in plan.stopping:
        hits = hits | criterion(input_ids, tuple(scores) or None)
    return be.all(hits)
