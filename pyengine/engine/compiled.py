"""The decoding loop as one traceable function: what XLA compiles for TensorFlow and JAX.

`loop.run` is the eager loop (a Python `while` with host syncs). This is the same algorithm written for
`tf.while_loop` / `lax.while_loop`: every shape is fixed before the loop starts and every decision inside
it is an array operation. The two give the same tokens; tests run both on the NumPy backend (whose
`while_loop` is a Python loop) and compare.

Fixed shapes:
- `tokens` `[B, max_length]` holds the prompt and, past the current length, -1 ("not yet written"). The
  processor specs get this whole buffer; the ops read ids < 0 as absent and take the current length as
  the number of entries >= 0 in a row (pyengine/ops/logits.py, "History and the compiled loop").
- `cur` is a 0-d integer array: the number of positions written.
- `scores` (output_scores only) is one `[B, max_length - S, V]` buffer, step i in `[:, i]`.

The caller runs the prefill (a different shape) and hands over its last-position logits; `step_fn` then
runs one decode step per iteration. Not supported here (callers use `loop.run`): user stopping criteria,
user (Custom) processors, max_time, synced_gpus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.backends.base import Array, Backend
from pyengine.engine import processors as P
from pyengine.engine.plan import DecodePlan

UNWRITTEN = -1  # token-buffer entries past the current length

StepFn = Callable[[Any, Array, Array], tuple[Array, Any]]  # (model_state, next_tokens [B], cur) -> (logits, state)


@dataclass
class CompiledResult:
    sequences: Array  # [B, max_length]: rows past their end (and past `length`) hold the pad id
    length: Array  # 0-d int: positions written (the eager loop's sequences would be sequences[:, :length])
    scores: Array | None  # [B, max_length - S, V] processed scores per step (output_scores), else None


def check_compilable(plan: DecodePlan) -> None:
    """Raise ValueError naming what in `plan` needs the eager loop."""
    reasons = []
    if plan.stopping:
        reasons.append("custom stopping criteria")
    if plan.max_time is not None:
        reasons.append("max_time")
    if plan.sync is not None:
        reasons.append("synced_gpus")
    if any(isinstance(spec, (P.Custom, P.HammingDiversity)) for spec in plan.processors):
        reasons.append("user logits processors")
    if reasons:
        raise ValueError(
            f"the compiled decoding loop cannot run {', '.join(reasons)}; call generate without compilation "
            "(TF: outside tf.function(jit_compile=True); Flax: trace=False) for these."
        )


def run_compiled(
    plan: DecodePlan,
    backend: Backend,
    prompt: Array,
    first_logits: Array,
    model_state: Any,
    step_fn: StepFn,
    rng: Any = None,
) -> CompiledResult:
    """Decode `prompt` `[B, S]` to `plan.max_length`, starting from the prefill's `first_logits` `[B, V]`.

    `step_fn(model_state, next_tokens, cur)` runs the model on the tokens just chosen (`cur` counts them)
    and returns the next logits `[B, V]` float32 and the new state. `rng` is the backend's random state,
    split once per sampling step with `backend.rng_split`.
    """
    check_compilable(plan)
    if plan.strategy == "sample" and rng is None:
        raise ValueError("sampling needs a random state: pass a PRNG key / seed.")
    ops = backend.ops
    batch, start = prompt.shape[0], prompt.shape[1]
    total = plan.max_length
    pad = plan.pad_token_id if plan.pad_token_id is not None else 0
    eos = list(plan.eos_token_ids)
    steps = max(total - start, 0)
    # Loop state holds arrays only (tf.while_loop takes no None): placeholders stand in for unused parts.
    scores_shape = (batch, steps, first_logits.shape[-1]) if plan.output_scores else (0,)
    if rng is None:
        rng = backend.asarray(0, "int32")

    def cond(state: tuple) -> Array:
        _, cur, finished, *_ = state
        return (cur < total) & ~backend.all_traced(finished)

    def body(state: tuple) -> tuple:
        tokens, cur, finished, logits, model, key, scores_out = state
        scores = logits
        for spec in plan.processors:
            scores = spec(ops, tokens, scores)
        if plan.output_scores:
            scores_out = backend.dynamic_set_step(scores_out, cur - start, scores)
        if plan.strategy == "sample":
            key, sub = backend.rng_split(key)
            next_tokens = backend.sample(scores, sub)  # [B]
        else:
            next_tokens = ops.argmax(scores)  # [B]
        if eos:
            next_tokens = backend.where(finished, pad, next_tokens)
            finished = backend.logical_or(finished, backend.isin(next_tokens, eos))
        tokens = backend.dynamic_set_column(tokens, cur, next_tokens)
        cur = cur + 1
        logits, model = step_fn(model, next_tokens, cur)
        return tokens, cur, finished, logits, model, key, scores_out

    state = (
        backend.token_buffer(prompt, total, fill=UNWRITTEN),
        backend.asarray(start, "int32"),
        backend.zeros_bool(batch),
        first_logits,
        model_state,
        rng,
        backend.full(scores_shape, 0.0, "float32"),
    )
    tokens, cur, _, _, _, _, scores_buf = backend.while_loop(cond, body, state)
    sequences = backend.where(tokens < 0, pad, tokens)
    return CompiledResult(sequences=sequences, length=cur, scores=scores_buf if plan.output_scores else None)
