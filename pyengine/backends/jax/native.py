"""The processor and selection ops in jax.numpy / lax: the XLA fallback, and so far the only JAX impl.

Same names, arguments and meaning as the NumPy reference (`pyengine/ops/logits.py`, `ops/sampling.py`).
Everything here traces under `jax.jit` and inside `lax.while_loop`:
- no Python `if` on array values (`where` instead), shapes fixed by the inputs;
- `tokens` may be the compiled loop's whole `[B, max_length]` buffer: ids < 0 are "not yet written" and
  the current length is the number of entries >= 0 in a row (every row has the same length);
- numeric arguments (temperature, penalty, top_k, top_p, min_p, min_len, at_len) may be traced scalars,
  so a new value does not recompile; structural ones (n-gram size, bad-word ids, EOS ids, forced ids,
  min_tokens_to_keep) are Python values fixed at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = Any
NEG_INF = -jnp.inf


def seq_length(tokens: Array) -> Array:
    """0-d int32: the written length of the history (entries >= 0 in row 0)."""
    tokens = jnp.asarray(tokens)
    if tokens.shape[0] == 0:
        return jnp.int32(tokens.shape[1])
    return jnp.sum(tokens[0] >= 0).astype(jnp.int32)


def temperature(scores: Array, temperature: Any) -> Array:
    """`scores / temperature` (TemperatureLogitsWarper)."""
    return scores / jnp.asarray(temperature, dtype=scores.dtype)


def repetition_penalty(scores: Array, tokens: Array, penalty: Any) -> Array:
    """Penalise each id present in the row once: negative scores times `penalty`, positive divided."""
    tokens = jnp.asarray(tokens)
    rows = jnp.arange(scores.shape[0])[:, None]
    picked = jnp.take_along_axis(scores, jnp.clip(tokens, 0, scores.shape[-1] - 1), axis=-1)
    penalty = jnp.asarray(penalty, dtype=scores.dtype)
    updated = jnp.where(picked < 0, picked * penalty, picked / penalty)
    index = jnp.where(tokens >= 0, tokens, scores.shape[-1])  # unwritten ids land out of range: dropped
    return scores.at[rows, index].set(updated, mode="drop")


def min_length(scores: Array, tokens: Array, min_len: Any, eos_token_ids: Sequence[int]) -> Array:
    """Ban EOS while the length (prompt included) is below `min_len` (MinLengthLogitsProcessor)."""
    eos = jnp.asarray(list(eos_token_ids), dtype=jnp.int32)
    ban = seq_length(tokens) < min_len
    return scores.at[:, eos].set(jnp.where(ban, NEG_INF, scores[:, eos]))


def no_repeat_ngram(scores: Array, tokens: Array, ngram_size: int) -> Array:
    """Ban every token that would repeat an n-gram of the row's history (NoRepeatNGramLogitsProcessor).

    Fixed shapes: every start position `s` of the buffer is a candidate n-gram; it counts when it lies in
    the written part (`s + n - 1 < cur`) and its first n-1 tokens equal the row's last n-1 tokens.
    """
    tokens = jnp.asarray(tokens)
    n = int(ngram_size)
    batch, total = tokens.shape
    starts = total - n + 1
    if starts <= 0:
        return scores
    cur = seq_length(tokens)
    match = jnp.arange(starts)[None, :] <= cur - n  # [1, starts]
    if n > 1:
        prefix = lax.dynamic_slice_in_dim(tokens, jnp.maximum(cur - (n - 1), 0), n - 1, axis=1)  # [B, n-1]
        for j in range(n - 1):
            match = match & (tokens[:, j : j + starts] == prefix[:, j : j + 1])
    banned = jnp.where(match & (cur + 1 >= n), tokens[:, n - 1 :], scores.shape[-1])  # [B, starts]
    rows = jnp.arange(batch)[:, None]
    return scores.at[rows, banned].set(NEG_INF, mode="drop")


def bad_words(scores: Array, tokens: Array, bad_words_ids: Sequence[Sequence[int]]) -> Array:
    """Ban words (NoBadWordsLogitsProcessor): one-token words always; the last token of a longer word in
    the rows whose history ends with the word's other tokens."""
    tokens = jnp.asarray(tokens)
    cur = seq_length(tokens)
    out = scores
    for word in bad_words_ids:
        *prefix, last = (int(t) for t in word)
        if not prefix:
            out = out.at[:, last].set(NEG_INF)
            continue
        k = len(prefix)
        if k > tokens.shape[1]:
            continue
        tail = lax.dynamic_slice_in_dim(tokens, jnp.maximum(cur - k, 0), k, axis=1)  # [B, k]
        hit = jnp.all(tail == jnp.asarray(prefix, dtype=tokens.dtype), axis=1) & (cur >= k)  # [B]
        out = out.at[:, last].set(jnp.where(hit, NEG_INF, out[:, last]))
    return out


def forced_token(scores: Array, tokens: Array, at_len: Any, token_ids: Sequence[int]) -> Array:
    """At length `at_len`, every score becomes -inf except `token_ids` (0); otherwise unchanged."""
    forced = jnp.full_like(scores, NEG_INF).at[:, jnp.asarray(list(token_ids), dtype=jnp.int32)].set(0)
    return jnp.where(seq_length(tokens) == at_len, forced, scores)


def inf_nan_remove(scores: Array) -> Array:
    """NaN → 0, +inf → the dtype's max, -inf → the dtype's min (InfNanRemoveLogitsProcessor, 4.57)."""
    info = jnp.finfo(scores.dtype)
    out = jnp.where(jnp.isnan(scores), 0.0, scores)
    out = jnp.where(out == jnp.inf, info.max, out)
    return jnp.where(out == -jnp.inf, info.min, out).astype(scores.dtype)


def top_k_mask(scores: Array, top_k: Any, filter_value: float = NEG_INF, min_tokens_to_keep: Any = 1) -> Array:
    """Keep the scores >= the row's k-th largest (ties kept); `k = min(max(top_k, min_keep), V)`.

    `top_k` may be traced, so a static-k `lax.top_k` cannot find the threshold. A full sort can, but costs
    ~100 ms per step for 8 rows of GPT-2's 50257 scores on a CPU; instead the k-th largest value is found
    exactly by bisection over the 32-bit keys of the scores (float order as unsigned integers): 32 passes
    of "how many keys are >= mid", each a cheap reduction.
    """
    vocab = scores.shape[-1]
    k = jnp.clip(jnp.maximum(jnp.asarray(top_k), min_tokens_to_keep), 1, vocab).astype(jnp.int32)
    kth = kth_largest(scores.astype(jnp.float32), k)  # [B, 1]
    return jnp.where(scores < kth, filter_value, scores).astype(scores.dtype)


def kth_largest(scores: Array, k: Array) -> Array:
    """`[B, 1]`: the k-th largest value of each row of float32 `scores` (k a traced int, 1 <= k <= V)."""
    bits = lax.bitcast_convert_type(scores, jnp.uint32)
    keys = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))  # monotone in the float order
    lo = jnp.min(keys, axis=-1, keepdims=True)  # count(keys >= lo) = V >= k always holds
    hi = jnp.max(keys, axis=-1, keepdims=True)

    def halve(_: Any, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
        lo, hi = bounds
        mid = lo + (hi - lo) // 2 + (hi - lo) % 2  # ceil, without overflow
        enough = jnp.sum(keys >= mid, axis=-1, keepdims=True) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    lo, _ = lax.fori_loop(0, 32, halve, (lo, hi))
    bits = jnp.where(lo >> 31 == 1, lo & jnp.uint32(0x7FFFFFFF), ~lo)
    return lax.bitcast_convert_type(bits, jnp.float32)


def top_p_mask(scores: Array, top_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: Any = 1) -> Array:
    """Nucleus filter (transformers >= 4.26): sort ascending (stable), drop tokens whose cumulative
    probability is <= 1 - top_p; the `min_tokens_to_keep` most likely always stay.

    At top_p >= 1 that drops exactly the zero-probability tokens (with one token to keep, the best always
    has a positive one): that branch skips the sort, which compiled loops would otherwise run every step at
    the top_p = 1.0 they hold when the user set none (engine/plan.with_every_warper)."""
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep != 1:
        return _top_p_sorted(scores, top_p, filter_value, min_tokens_to_keep)

    def nothing_above_zero(s: Array) -> Array:
        probs = jax.nn.softmax(s.astype(jnp.float32), axis=-1)
        return jnp.where(probs == 0, filter_value, s).astype(s.dtype)

    return lax.cond(jnp.asarray(top_p, jnp.float32) < 1.0, lambda s: _top_p_sorted(s, top_p, filter_value, 1),
                    nothing_above_zero, scores)  # fmt: skip


def _top_p_sorted(scores: Array, top_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: Any = 1) -> Array:
    vocab = scores.shape[-1]
    order = jnp.argsort(scores, axis=-1, stable=True)
    sorted_scores = jnp.take_along_axis(scores, order, axis=-1).astype(jnp.float32)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_scores, axis=-1), axis=-1)
    remove_sorted = cumulative <= (1 - jnp.asarray(top_p, dtype=jnp.float32))
    remove_sorted = remove_sorted & (jnp.arange(vocab)[None, :] < vocab - jnp.asarray(min_tokens_to_keep))
    rows = jnp.arange(scores.shape[0])[:, None]
    remove = jnp.zeros_like(remove_sorted).at[rows, order].set(remove_sorted)
    return jnp.where(remove, filter_value, scores).astype(scores.dtype)


def min_p_mask(scores: Array, min_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: Any = 1) -> Array:
    """Drop tokens with probability < min_p * the row's top probability; the best `min_tokens_to_keep` stay."""
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    remove = probs < jnp.asarray(min_p, dtype=jnp.float32) * jnp.max(probs, axis=-1, keepdims=True)
    order = jnp.argsort(-scores, axis=-1, stable=True)
    rows = jnp.arange(scores.shape[0])[:, None]
    rank = jnp.zeros_like(order).at[rows, order].set(jnp.broadcast_to(jnp.arange(scores.shape[-1]), order.shape))
    return jnp.where(remove & (rank >= jnp.asarray(min_tokens_to_keep)), filter_value, scores).astype(scores.dtype)


def argmax(scores: Array) -> Array:
    """Greedy selection `[B]`; ties go to the lowest id."""
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def sample_from_scores(scores: Array, uniform: Array) -> Array:
    """Inverse-CDF draw from softmax(scores) with noise `uniform` `[B]` in [0, 1); -inf tokens never win."""
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)
    picks = jnp.sum(cdf <= uniform[:, None] * cdf[:, -1:], axis=-1)
    vocab = probs.shape[-1]
    last_nonzero = vocab - 1 - jnp.argmax(probs[:, ::-1] > 0, axis=-1)
    return jnp.minimum(picks, last_nonzero).astype(jnp.int32)
