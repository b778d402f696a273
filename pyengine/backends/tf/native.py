"""TensorFlow native implementations of the ops: plain TF, XLA-compilable, same names as `pyengine/ops/`.

Every op here runs eagerly and inside `tf.function(jit_compile=True)`: no Python `if` on tensor values,
fixed shapes, `tf.where` for decisions. Sampling values (temperature, top-k, top-p, min-p, lengths) may
be Python numbers or traced scalars, so one compilation serves many settings.

History convention (engine/compiled.py): `tokens` `[B, T]` may be the compiled loop's whole buffer, in
which positions not yet written hold -1. Ids < 0 are "no token"; the current length is the number of
entries >= 0 in a row (every row has the same length). An eager history has no -1: its length is `T`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyengine.backends.tf import tf

NEG_INF = float("-inf")


def seq_length(tokens: tf.Tensor) -> tf.Tensor:
    """0-d int32: the history's current length (entries >= 0 in row 0)."""
    return tf.reduce_sum(tf.cast(tokens[0] >= 0, tf.int32))


def _token_mask(tokens: tf.Tensor, valid: tf.Tensor, vocab: int) -> tf.Tensor:
    """Bool `[B, V]`: True at (row, tokens[row, j]) for every j with valid[row, j]."""
    tokens = tf.cast(tokens, tf.int32)
    ids = tf.where(valid, tokens, tf.zeros_like(tokens))  # -1 slots point at 0 but add nothing
    rows = tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None], tf.shape(ids))
    index = tf.stack([rows, ids], axis=-1)  # [B, T, 2]
    zeros = tf.zeros([tf.shape(ids)[0], vocab], tf.int32)
    return tf.tensor_scatter_nd_max(zeros, index, tf.cast(valid, tf.int32)) > 0


def _column_mask(ids: Sequence[int], vocab: int) -> tf.Tensor:
    """Bool `[1, V]`: True at the given token ids."""
    return tf.reduce_any(tf.one_hot(list(ids), vocab, on_value=True, off_value=False, dtype=tf.bool), axis=0)[None]


def temperature(scores: tf.Tensor, temperature: Any) -> tf.Tensor:
    return scores / tf.cast(temperature, scores.dtype)


def repetition_penalty(scores: tf.Tensor, tokens: tf.Tensor, penalty: Any) -> tf.Tensor:
    penalty = tf.cast(penalty, scores.dtype)
    seen = _token_mask(tokens, tokens >= 0, scores.shape[-1])  # [B, V]
    penalized = tf.where(scores < 0, scores * penalty, scores / penalty)
    return tf.where(seen, penalized, scores)


def min_length(scores: tf.Tensor, tokens: tf.Tensor, min_len: Any, eos_token_ids: Sequence[int]) -> tf.Tensor:
    ban = _column_mask(eos_token_ids, scores.shape[-1]) & (seq_length(tokens) < tf.cast(min_len, tf.int32))
    return tf.where(ban, tf.constant(NEG_INF, scores.dtype), scores)


def no_repeat_ngram(scores: tf.Tensor, tokens: tf.Tensor, ngram_size: int) -> tf.Tensor:
    n, total = int(ngram_size), tokens.shape[1]
    if total < n:  # no complete n-gram fits in the buffer
        return scores
    tokens = tf.cast(tokens, tf.int32)
    length = seq_length(tokens)
    frames = tf.signal.frame(tokens, n, 1, axis=1)  # [B, W, n], W = T - n + 1
    starts = tf.range(tf.shape(frames)[1])  # [W]
    complete = starts + n - 1 < length  # [W]: the window's last token is written
    if n > 1:
        at = tf.maximum(length - n + 1, 0) + tf.range(n - 1)  # [n-1] positions of the row's last n-1 tokens
        prefix = tf.gather(tokens, at, axis=1)  # [B, n-1]
        match = tf.reduce_all(frames[:, :, : n - 1] == prefix[:, None, :], axis=-1)  # [B, W]
    else:
        match = tf.ones(tf.shape(frames)[:2], tf.bool)
    ban = _token_mask(frames[:, :, n - 1], match & complete[None, :], scores.shape[-1])
    return tf.where(ban, tf.constant(NEG_INF, scores.dtype), scores)


def bad_words(scores: tf.Tensor, tokens: tf.Tensor, bad_words_ids: Sequence[Sequence[int]]) -> tf.Tensor:
    vocab = scores.shape[-1]
    tokens = tf.cast(tokens, tf.int32)
    length = seq_length(tokens)
    ban = tf.zeros_like(scores, dtype=tf.bool)
    singles = [w[0] for w in bad_words_ids if len(w) == 1]
    if singles:
        ban = ban | _column_mask(singles, vocab)
    for word in (w for w in bad_words_ids if len(w) > 1):
        *prefix, last = (int(t) for t in word)
        m = len(prefix)
        at = tf.minimum(tf.maximum(length - m, 0) + tf.range(m), tokens.shape[1] - 1)  # [m] the last m tokens
        match = tf.reduce_all(tf.gather(tokens, at, axis=1) == tf.constant(prefix, tf.int32)[None], axis=1)
        match = match & (length >= m)  # [B]
        ban = ban | (match[:, None] & _column_mask([last], vocab))
    return tf.where(ban, tf.constant(NEG_INF, scores.dtype), scores)


def forced_token(scores: tf.Tensor, tokens: tf.Tensor, at_len: Any, token_ids: Sequence[int]) -> tf.Tensor:
    forced = tf.where(_column_mask(token_ids, scores.shape[-1]), tf.zeros_like(scores), tf.fill(tf.shape(scores), NEG_INF))
    return tf.where(seq_length(tokens) == tf.cast(at_len, tf.int32), forced, scores)


def inf_nan_remove(scores: tf.Tensor) -> tf.Tensor:
    finfo = np.finfo(scores.dtype.as_numpy_dtype)
    out = tf.where(tf.math.is_nan(scores), tf.zeros_like(scores), scores)
    out = tf.where(out == float("inf"), tf.constant(finfo.max, scores.dtype), out)
    return tf.where(out == NEG_INF, tf.constant(finfo.min, scores.dtype), out)


def top_k_mask(scores: tf.Tensor, top_k: Any, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> tf.Tensor:
    vocab = scores.shape[-1]
    k = tf.minimum(tf.maximum(tf.cast(top_k, tf.int32), min_tokens_to_keep), vocab)
    kth = kth_largest(scores, k)  # [B, 1]
    return tf.where(scores < kth, tf.constant(filter_value, scores.dtype), scores)


def kth_largest(scores: tf.Tensor, k: Any) -> tf.Tensor:
    """The k-th largest float32 score per row `[B, 1]`, exactly, without sorting the vocabulary.

    A traced k cannot size tf.math.top_k, and XLA's CPU sort of a 50k vocabulary costs ~100 ms a step.
    Instead: floats map to int32 keys in the same order (negative ones get their magnitude bits flipped),
    and 32 bisection steps on the key find the largest key whose count of keys >= it is at least k: the
    k-th largest value. Each step is one compare-and-count over `[B, V]`.
    """
    bits = tf.bitcast(tf.cast(scores, tf.float32), tf.int32)
    key = tf.cast(tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits), tf.int64)  # [B, V]
    lo = tf.fill([tf.shape(scores)[0], 1], tf.constant(-(2**31), tf.int64))  # answer in [lo, hi]
    hi = tf.fill([tf.shape(scores)[0], 1], tf.constant(2**31 - 1, tf.int64))
    k = tf.cast(k, tf.int64)

    def halve(i: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        mid = lo + (hi - lo + 1) // 2
        enough = tf.reduce_sum(tf.cast(key >= mid, tf.int64), axis=-1, keepdims=True) >= k
        return i + 1, tf.where(enough, mid, lo), tf.where(enough, hi, mid - 1)

    # 32 halvings cover the 2**32 keys; a loop (not unrolled) keeps the XLA program small.
    _, lo, _ = tf.while_loop(lambda i, lo, hi: i < 32, halve, (tf.constant(0), lo, hi))
    found = tf.cast(lo, tf.int32)
    bits = tf.where(found < 0, tf.bitwise.bitwise_xor(found, 0x7FFFFFFF), found)
    return tf.cast(tf.bitcast(bits, tf.float32), scores.dtype)


def _order_keys(scores: tf.Tensor) -> tf.Tensor:
    """int64 `[B, V]` keys in the order of the float32 scores (negative floats get their magnitude bits flipped)."""
    bits = tf.bitcast(tf.cast(scores, tf.float32), tf.int32)
    return tf.cast(tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits), tf.int64)


def top_p_mask(scores: tf.Tensor, top_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> tf.Tensor:
    """Nucleus filter (`_top_p_bisect`). At top_p >= 1 the cut removes exactly the tokens of zero probability
    (with one token to keep, the best always has a positive one): that branch skips the 32 bisection passes,
    which compiled loops run at top_p = 1.0 when the user set no top-p (engine/plan.with_every_warper)."""
    if min_tokens_to_keep != 1:
        return _top_p_bisect(scores, top_p, filter_value, min_tokens_to_keep)

    def nothing_above_zero() -> tf.Tensor:
        probs = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
        return tf.where(probs == 0, tf.constant(filter_value, scores.dtype), scores)

    return tf.cond(tf.cast(top_p, tf.float32) < 1.0, lambda: _top_p_bisect(scores, top_p, filter_value, 1),
                   nothing_above_zero)  # fmt: skip


def _top_p_bisect(scores: tf.Tensor, top_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> tf.Tensor:
    """Nucleus filter without sorting the vocabulary (XLA's CPU sort of 50k scores costs ~20 ms a row).

    The reference removes a prefix of the stable ascending order: every token whose cumulative probability
    is <= 1 - top_p, never the last `min_tokens_to_keep`. Here 32 bisection steps on the order keys (as in
    `kth_largest`) find the largest key u with mass(keys < u) <= 1 - top_p; all keys < u go, and of the
    tokens tied at u (equal probability q) the lowest-index ones while the running mass stays <= 1 - top_p.
    """
    vocab = scores.shape[-1]
    key = _order_keys(scores)  # [B, V]
    probs = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
    limit = 1.0 - tf.cast(top_p, tf.float32)
    lo = tf.fill([tf.shape(scores)[0], 1], tf.constant(-(2**31), tf.int64))
    hi = tf.fill([tf.shape(scores)[0], 1], tf.constant(2**31 - 1, tf.int64))

    def halve(i: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        mid = lo + (hi - lo + 1) // 2
        ok = tf.reduce_sum(tf.where(key < mid, probs, 0.0), axis=-1, keepdims=True) <= limit
        return i + 1, tf.where(ok, mid, lo), tf.where(ok, hi, mid - 1)

    _, u, _ = tf.while_loop(lambda i, lo, hi: i < 32, halve, (tf.constant(0), lo, hi))
    below = key < u
    tied = key == u
    rank = tf.cumsum(tf.cast(tied, tf.int32), axis=-1)  # 1-based index order within the tie
    mass = tf.reduce_sum(tf.where(below, probs, 0.0), axis=-1, keepdims=True)
    remove = below | (tied & (mass + tf.cast(rank, tf.float32) * probs <= limit))
    # min_tokens_to_keep: at most V - keep go, the lowest in the stable ascending order.
    most = vocab - min_tokens_to_keep
    if most < vocab:
        if min_tokens_to_keep == 1:
            kth = tf.reduce_max(key, axis=-1, keepdims=True)  # [B, 1]
        else:
            kth = _order_keys(kth_largest(scores, min_tokens_to_keep))
        at_kth = key == kth
        allowed = (key < kth) | (at_kth & (tf.cumsum(tf.cast(at_kth, tf.int32), axis=-1)
                                           <= most - tf.reduce_sum(tf.cast(key < kth, tf.int32), -1, keepdims=True)))
        remove = remove & allowed
    return tf.where(remove, tf.constant(filter_value, scores.dtype), scores)


def min_p_mask(scores: tf.Tensor, min_p: Any, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> tf.Tensor:
    probs = tf.nn.softmax(scores, axis=-1)
    remove = probs < tf.cast(min_p, probs.dtype) * tf.reduce_max(probs, axis=-1, keepdims=True)
    best = tf.math.top_k(scores, k=min_tokens_to_keep).indices  # ties: lower index first, as the reference
    keep = _token_mask(best, tf.ones_like(best, tf.bool), scores.shape[-1])
    return tf.where(remove & ~keep, tf.constant(filter_value, scores.dtype), scores)


def argmax(scores: tf.Tensor) -> tf.Tensor:
    """`[B]` int32; ties go to the lowest token id."""
    return tf.argmax(scores, axis=-1, output_type=tf.int32)


def sample_from_scores(scores: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
    """Inverse-CDF draw from softmax(scores) with noise `uniform` `[B]` in [0, 1); -inf tokens never drawn."""
    probs = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
    cdf = tf.cumsum(probs, axis=-1)
    target = tf.cast(uniform, tf.float32)[:, None] * cdf[:, -1:]
    picks = tf.reduce_sum(tf.cast(cdf <= target, tf.int32), axis=-1)
    vocab = scores.shape[-1]
    last_nonzero = vocab - 1 - tf.argmax(tf.cast(tf.reverse(probs, axis=[-1]) > 0, tf.int32), axis=-1, output_type=tf.int32)
    return tf.minimum(picks, last_nonzero)
