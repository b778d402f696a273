"""Processor specs: what the engine knows how to apply, each one op call.

A spec is a small frozen dataclass; calling it applies its op from the backend's op table to `scores`
`[B, V]`, given the history `tokens` `[B, cur_len]` (prompt plus generated). The order of a plan's specs
is transformers' order. A user object the engine does not recognise is wrapped in `Custom` and called
as-is (eager only).

Group beam search also hands a per-step context (`current_tokens`, `beam_group_idx`) to the specs whose
`accepts_context` is set; `apply()` does that routing.

`argmax_invariant` marks the specs that can never change which token is the argmax (temperature and the
sampling filters), so greedy plans may skip them.

In place: a spec whose `inplace_capable` is set takes `inplace=True` and passes it to its op, which may
then write into `scores` (the op's contract: `pyengine/ops/logits.py`). Only `run_chain(..., owned=True)`
asks for it, when the caller owns the scores buffer (the decoding loop, on the fresh logits of a step):
a spec called on its own, as the user-visible LogitsProcessor classes do, never modifies its input.
An op implementation without an `inplace` parameter (the compiled backends) is called without it
(`takes_inplace`) and returns a new array as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pyengine.ops.registry import OpTable

Array = Any


@dataclass(frozen=True)
class Temperature:
    value: float
    argmax_invariant = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.temperature(scores, self.value)


@cache
def takes_inplace(fn: Callable[..., Any]) -> bool:
    """Whether an op implementation has the `inplace` parameter (checked once per implementation)."""
    try:
        return "inplace" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no introspectable signature: call it the plain way
        return False


def _inplace(fn: Callable[..., Any], inplace: bool) -> dict[str, bool]:
    return {"inplace": True} if inplace and takes_inplace(fn) else {}


@dataclass(frozen=True)
class RepetitionPenalty:
    penalty: float
    argmax_invariant = False
    inplace_capable = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, inplace: bool = False) -> Array:
        fn = ops.repetition_penalty
        return fn(scores, tokens, self.penalty, **_inplace(fn, inplace))


@dataclass(frozen=True)
class NoRepeatNGram:
    ngram_size: int
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.no_repeat_ngram(scores, tokens, self.ngram_size)


@dataclass(frozen=True)
class BadWords:
    bad_words_ids: tuple[tuple[int, ...], ...]
    argmax_invariant = False
    inplace_capable = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, inplace: bool = False) -> Array:
        fn = ops.bad_words
        return fn(scores, tokens, self.bad_words_ids, **_inplace(fn, inplace))


@dataclass(frozen=True)
class MinLength:
    min_length: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False
    inplace_capable = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, inplace: bool = False) -> Array:
        fn = ops.min_length
        return fn(scores, tokens, self.min_length, self.eos_token_ids, **_inplace(fn, inplace))


@dataclass(frozen=True)
class MinNewTokens:
    prompt_length: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False
    inplace_capable = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, inplace: bool = False) -> Array:
        # new tokens < min_new_tokens  <=>  length < prompt_length + min_new_tokens
        fn = ops.min_length
        return fn(scores, tokens, self.prompt_length + self.min_new_tokens, self.eos_token_ids,
                  **_inplace(fn, inplace))


@dataclass(frozen=True)
class ForcedBOS:
    bos_token_id: int
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.forced_token(scores, tokens, 1, (self.bos_token_id,))


@dataclass(frozen=True)
class ForcedEOS:
    max_length: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.forced_token(scores, tokens, self.max_length - 1, self.eos_token_ids)


@dataclass(frozen=True)
class InfNanRemove:
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.inf_nan_remove(scores)


@dataclass(frozen=True)
class TopK:
    top_k: int
    min_tokens_to_keep: int = 1
    argmax_invariant = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.top_k_mask(scores, self.top_k, -float("inf"), self.min_tokens_to_keep)


@dataclass(frozen=True)
class TopP:
    top_p: float
    min_tokens_to_keep: int = 1
    argmax_invariant = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.top_p_mask(scores, self.top_p, -float("inf"), self.min_tokens_to_keep)


@dataclass(frozen=True)
class MinP:
    min_p: float
    min_tokens_to_keep: int = 1
    argmax_invariant = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.min_p_mask(scores, self.min_p, -float("inf"), self.min_tokens_to_keep)


@dataclass(frozen=True)
class HammingDiversity:
    """Group beam search only: needs the step's `current_tokens` and the group index (see group_beam_search)."""

    penalty: float
    num_beams: int
    num_beam_groups: int
    argmax_invariant = False
    accepts_context = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, current_tokens: Array = None,
                 beam_group_idx: int = 0) -> Array:
        if current_tokens is None:
            raise ValueError("HammingDiversity runs only inside group beam search (it needs current_tokens).")
        sub = self.num_beams // self.num_beam_groups
        return ops.hamming_diversity(scores, current_tokens, beam_group_idx, self.num_beams, sub, self.penalty)


@dataclass(frozen=True)
class Custom:
    """A user processor `fn(tokens, scores, **extra) -> scores`, called as transformers calls it.

    Extra keyword arguments (group beam search passes `current_tokens` and `beam_group_idx`) reach the
    processor only when its `__call__` takes more than two parameters, as in `LogitsProcessorList`.
    """

    fn: Callable[..., Array]
    argmax_invariant = False
    accepts_context = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array, **extra: Any) -> Array:
        if extra and _takes_extra(self.fn):
            return self.fn(tokens, scores, **extra)
        return self.fn(tokens, scores)


def _takes_extra(fn: Callable[..., Any]) -> bool:
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else fn.__call__  # bound: no self
    return len(inspect.signature(target).parameters) > 2


@dataclass(frozen=True)
class FusedArgmax:
    """Greedy selection with the processors the fused kernel knows, in one pass (`ops.fused_argmax`).

    Built by `plan.fuse_greedy` only when it gives the same token as the processor chain + argmax:
    repetition penalty, then min-length EOS ban, then single-token bans; ties go to the lowest id.
    """

    penalty: float = 1.0
    min_len: int = 0
    eos_token_ids: tuple[int, ...] = ()
    banned_ids: tuple[int, ...] = ()

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.fused_argmax(scores, tokens, None, self.penalty, self.min_len, self.eos_token_ids, self.banned_ids)


@dataclass(frozen=True)
class FusedSample:
    """Sampling with the fused kernel and counter-based noise (`ops.fused_sample`).

    Row r draws with `u = uniform(seeds[r], step)`, step = the row's current length, so its tokens depend
    only on its own seed and position: the same alone or in any batch. Built by `plan.fuse_sample`.
    """

    seeds: tuple[int, ...]
    penalty: float = 1.0
    min_len: int = 0
    eos_token_ids: tuple[int, ...] = ()
    banned_ids: tuple[int, ...] = ()
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    min_tokens_to_keep: int = 1

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.fused_sample(
            scores, tokens, None, self.penalty, self.min_len, self.eos_token_ids, self.banned_ids, self.temperature,
            self.top_k, self.top_p, self.min_p, list(self.seeds), tokens.shape[1], self.min_tokens_to_keep,
        )


def apply(spec: Any, ops: OpTable, tokens: Array, scores: Array, **context: Any) -> Array:
    """Call `spec`, passing `context` only to the specs that take it."""
    if context and getattr(spec, "accepts_context", False):
        return spec(ops, tokens, scores, **context)
    return spec(ops, tokens, scores)


def run_chain(specs: Sequence[Any], ops: OpTable, tokens: Array, scores: Array, owned: bool = False) -> Array:
    """Apply `specs` in order to `scores` `[B, V]`; returns the processed scores.

    `owned`: the caller owns `scores` (a buffer nothing else holds or reads later, such as a step's fresh
    logits), so the in-place capable specs write into it instead of copying it. Every other spec's
    result is `scores` itself or a new array, which the chain then owns as well, except a `Custom`
    one's: user code may keep what it returns (or what it was given), so from the first `Custom` on the
    chain copies again.
    """
    for spec in specs:
        if owned and getattr(spec, "inplace_capable", False):
            scores = spec(ops, tokens, scores, inplace=True)
        else:
            scores = spec(ops, tokens, scores)
        owned = owned and not isinstance(spec, Custom)
    return scores

