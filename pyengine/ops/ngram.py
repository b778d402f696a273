"""Incremental no-repeat-n-gram state: spec and NumPy reference (NoRepeatNGramLogitsProcessor, per step O(1)).

transformers rebuilds every row's n-gram dictionary from the whole history at every step (O(T) Python per
row per step). Here the n-grams live in a per-row hash table that each step only extends:

    table = ngram_table_init(batch, max_len)        # int64 [B, 1 + 2C], C = power of two >= 2 * max_len
    each step:  ngram_table_add(table, tokens, n)   # records the n-grams not yet recorded (in place)
                scores = ngram_ban(scores, table, tokens, n)

`ngram_ban(scores, table, tokens, n)` equals `logits.no_repeat_ngram(scores, tokens, n)` whenever the table
records every n-gram of `tokens` (call `ngram_table_add` with the same history first).

Layout of a row (shared by every implementation, so tables move between them):
    [0]          number of n-grams recorded; they start at history positions 0 .. count-1
    [1 + 2s]     slot s: hash of the n-gram's first n-1 tokens (int64 bits of an unsigned 64-bit hash)
    [2 + 2s]     slot s: the n-gram's start position + 1 (0 marks an empty slot)
hash(t_1..t_m) = h_m with h_0 = 0x9E3779B97F4A7C15, h_j = mix64(h_(j-1) ^ t_j)  (`random.mix64`, ids mod 2**64).
Insertion probes linearly from `hash % C`; an n-gram equal (all n ids) to one already stored is skipped.
A lookup compares the stored position's ids with the history, so a hash collision never bans a wrong token.
"""

from __future__ import annotations

import numpy as np

from pyengine.ops.random import GOLDEN, MASK64, mix64


def capacity(max_len: int) -> int:
    """Slots per row: the smallest power of two >= 2 * max_len (load factor <= 1/2), at least 16."""
    c = 16
    while c < 2 * max_len:
        c *= 2
    return c


def ngram_table_init(batch: int, max_len: int) -> np.ndarray:
    """An empty table `[B, 1 + 2C]` for histories of up to `max_len` tokens."""
    return np.zeros((batch, 1 + 2 * capacity(max_len)), np.int64)


def hash_tokens(ids) -> int:
    h = GOLDEN
    for t in ids:
        h = mix64(h ^ (int(t) & MASK64))
    return h


def _signed(h: int) -> int:
    return h - (1 << 64) if h >= 1 << 63 else h


def _probe(row: np.ndarray, h: int):
    """Occupied slots from hash h's home slot up to the first empty one: yields (hash, start)."""
    c = (row.shape[0] - 1) // 2
    s = h % c
    while row[2 + 2 * s] != 0:
        yield int(row[1 + 2 * s]) & MASK64, int(row[2 + 2 * s]) - 1, s
        s = (s + 1) % c


def ngram_table_add(table: np.ndarray, tokens: np.ndarray, ngram_size: int) -> np.ndarray:
    """Record, in place, every n-gram of `tokens` `[B, T]` not yet in `table`; returns `table`."""
    n, t = ngram_size, tokens.shape[1]
    for b in range(tokens.shape[0]):
        row, hist = table[b], tokens[b].tolist()
        if t - n + 1 > (row.shape[0] - 1) // 4:
            raise ValueError(f"{t} tokens exceed the table's capacity; use ngram_table_init(batch, max_len >= {t})")
        for start in range(int(row[0]), t - n + 1):
            h = hash_tokens(hist[start : start + n - 1])
            slot = None
            for stored_h, pos, s in _probe(row, h):
                slot = s
                if stored_h == h and hist[pos : pos + n] == hist[start : start + n]:
                    break
            else:
                c = (row.shape[0] - 1) // 2
                free = h % c if slot is None else (slot + 1) % c
                row[1 + 2 * free], row[2 + 2 * free] = _signed(h), start + 1
            row[0] = start + 1
    return table


def ngram_ban(scores: np.ndarray, table: np.ndarray, tokens: np.ndarray, ngram_size: int) -> np.ndarray:
    """Scores with every recorded continuation of the history's last n-1 tokens set to -inf."""
    out = scores.copy()
    n, t = ngram_size, tokens.shape[1]
    if t < n - 1:
        return out
    for b in range(tokens.shape[0]):
        hist = tokens[b].tolist()
        prefix = hist[t - n + 1 :]
        h = hash_tokens(prefix)
        for stored_h, pos, _ in _probe(table[b], h):
            if stored_h == h and hist[pos : pos + n - 1] == prefix:
                out[b, hist[pos + n - 1]] = -np.inf
    return out
