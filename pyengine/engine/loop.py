"""The decoding loop: one for every framework. It imports no framework.

Each step: the model's `step_fn` turns the history into next-token logits `[B, V]`; the plan's processors
adjust them; the strategy picks one token per row; finished rows get the pad token; stopping is checked.
A `step_fn` whose `fresh_logits` attribute is true returns a new buffer each call that nothing else
holds: the processors then modify it in place (`processors.run_chain`) rather than copy it per op.
The token buffer `[B, max_length]` is allocated once and filled column by column.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.backends.base import Array, Backend
from pyengine.engine import processors as P
from pyengine.engine.plan import DecodePlan


@dataclass
class DecodeResult:
    sequences: Array  # [B, T_out]: prompt + generated, T_out <= max_length
    scores: tuple[Array, ...] | None  # per step [B, V], processed (output_scores)
    logits: tuple[Array, ...] | None  # per step [B, V], raw (output_logits)


def run(
    plan: DecodePlan,
    step_fn: Callable[[Array], Array],
    backend: Backend,
    prompt: Array,
    rng: Any = None,
    on_step: Callable[[Array], None] | None = None,
) -> DecodeResult:
    """Decode `prompt` `[B, S]` until every row stops or `plan.max_length` is reached.

    With `plan.sync` (synced_gpus), a process whose rows are done keeps calling `step_fn.idle` (a model
    forward that changes nothing) until `plan.sync(done)` reports that every process is done, so
    collective operations inside the model stay matched across processes.
    """
    ops = backend.ops
    batch, cur = prompt.shape[0], prompt.shape[1]
    tokens = backend.token_buffer(prompt, plan.max_length, fill=plan.pad_token_id or 0)  # [B, T]
    finished = backend.zeros_bool(batch)  # [B]
    scores_out: list[Array] = []
    logits_out: list[Array] = []
    deadline = None if plan.max_time is None else time.monotonic() + plan.max_time
    done = cur >= plan.max_length
    while not (plan.sync(done) if plan.sync is not None else done):
        history = tokens[:, :cur]  # [B, cur]
        if done:  # synced_gpus: this process is finished, the others are not
            step_fn.idle(history)
            continue
        logits = step_fn(history)  # [B, V] float32
        if plan.output_logits:
            logits_out.append(logits)
        if plan.fused_select is not None:  # processors + selection in one pass (fused kernel)
            next_tokens = plan.fused_select(ops, history, logits)
        else:
            # The chain may write into the logits when the step hands over a fresh buffer each call
            # (`step_fn.fresh_logits`) that no output keeps; output_scores keeps each step's own buffer.
            owned = getattr(step_fn, "fresh_logits", False) and not plan.output_logits
            scores = P.run_chain(plan.processors, ops, history, logits, owned=owned)
            if plan.output_scores:
                scores_out.append(scores)
            next_tokens = backend.sample(scores, rng) if plan.strategy == "sample" else ops.argmax(scores)  # [B]
        if plan.eos_token_ids:
            next_tokens = backend.where(finished, plan.pad_token_id, next_tokens)
            finished = backend.logical_or(finished, backend.isin(next_tokens, list(plan.eos_token_ids)))
        backend.set_column(tokens, cur, next_tokens)
        cur += 1
        if on_step is not None:
            on_step(next_tokens)
        for criterion in plan.stopping:
            finished = backend.logical_or(finished, criterion(tokens[:, :cur], tuple(scores_out) or None))
        timed_out = deadline is not None and time.monotonic() > deadline
        done = cur >= plan.max_length or timed_out or backend.all(finished)
    return DecodeResult(
        sequences=tokens[:, :cur],
        scores=tuple(scores_out) if plan.output_scores else None,
        logits=tuple(logits_out) if plan.output_logits else None,
    )
