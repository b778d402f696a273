"""Processor specs: what the engine knows how to apply, each one op call.

A spec is a small frozen dataclass; calling it applies its op from the backend's op table to `scores`
`[B, V]`, given the history `tokens` `[B, cur_len]` (prompt plus generated). The order of a plan's specs
is transformers' order. A user object the engine does not recognise is wrapped in `Custom` and called
as-is (eager only).

`argmax_invariant` marks the specs that can never change which token is the argmax (temperature and the
sampling filters), so greedy plans may skip them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyengine.ops.registry import OpTable

Array = Any


@dataclass(frozen=True)
class Temperature:
    value: float
    argmax_invariant = True

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.temperature(scores, self.value)


@dataclass(frozen=True)
class RepetitionPenalty:
    penalty: float
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.repetition_penalty(scores, tokens, self.penalty)


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

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.bad_words(scores, tokens, self.bad_words_ids)


@dataclass(frozen=True)
class MinLength:
    min_length: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.min_length(scores, tokens.shape[1], self.min_length, self.eos_token_ids)


@dataclass(frozen=True)
class MinNewTokens:
    prompt_length: int
    min_new_tokens: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        new = tokens.shape[1] - self.prompt_length
        return ops.min_length(scores, new, self.min_new_tokens, self.eos_token_ids)


@dataclass(frozen=True)
class ForcedBOS:
    bos_token_id: int
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.forced_token(scores, (self.bos_token_id,)) if tokens.shape[1] == 1 else scores


@dataclass(frozen=True)
class ForcedEOS:
    max_length: int
    eos_token_ids: tuple[int, ...]
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return ops.forced_token(scores, self.eos_token_ids) if tokens.shape[1] == self.max_length - 1 else scores


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
class Custom:
    """A user processor `fn(tokens, scores) -> scores`, called as-is."""

    fn: Callable[[Array, Array], Array]
    argmax_invariant = False

    def __call__(self, ops: OpTable, tokens: Array, scores: Array) -> Array:
        return self.fn(tokens, scores)
