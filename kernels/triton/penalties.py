"""Token bans in Triton: multi-token bad words and no-repeat-n-gram blocking, in place on a scores copy.

Specs: `pyengine.ops.logits.bad_words`, `pyengine.ops.logits.no_repeat_ngram`. The repetition penalty and the
min-length / single-id bans are `sampling.process_logits` (one pass that also feeds the fused draw).

    bad_words        grid (B, n_words): compare the row's last len(word) - 1 ids with the word's prefix,
                     write -inf at the word's last id on a match. Traffic: B * sum(len(word)) ids read,
                     at most B * n_words floats written.
    no_repeat_ngram  grid (B, ceil((T - n + 1) / BLOCK)): every start position compares its n - 1 ids with
                     the row's last n - 1 and bans the id that followed. Traffic: B * T * n ids read (the
                     history stays in L1/L2), at most B * T floats written; no per-row hash table is
                     needed on a GPU, where the O(T) scan is parallel and cheaper than a serial probe.
Both write only -inf, so programs that hit the same id race harmlessly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _bad_words_kernel(out_ptr, tokens_ptr, words_ptr, starts_ptr, V, T, stride_o, stride_t, MAX_LEN: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    word = tl.program_id(1)
    first = tl.load(starts_ptr + word)
    n_prefix = tl.load(starts_ptr + word + 1) - first - 1
    last = tl.load(words_ptr + first + n_prefix)
    i = tl.arange(0, MAX_LEN)
    want = tl.load(words_ptr + first + i, mask=i < n_prefix, other=0)
    hist = tl.load(tokens_ptr + row * stride_t + (T - n_prefix + i), mask=(i < n_prefix) & (i * 0 + n_prefix <= T), other=0)
    match = (n_prefix <= T) & (tl.sum(((want != hist) & (i < n_prefix)).to(tl.int32), axis=0) == 0)
    ok = (match & (last >= 0) & (last < V)).to(tl.int32)
    hit = (i == 0) & (i * 0 + ok == 1)  # one lane writes
    tl.store(out_ptr + row * stride_o + last + i * 0, tl.full([MAX_LEN], float("-inf"), tl.float32), mask=hit)


def bad_words(out: torch.Tensor, tokens: torch.Tensor, words: torch.Tensor, starts: torch.Tensor, max_len: int) -> None:
    """Bans, in place on `out` `[B, V]`, every word whose prefix ends the row's history `tokens` `[B, T]`.

    Words flattened: `words` int64 ids, word w is `words[starts[w]:starts[w + 1]]` (`starts` int64 `[n + 1]`).
    """
    b, v = out.shape
    n = starts.numel() - 1
    if b and n:
        _bad_words_kernel[(b, n)](
            out, tokens, words, starts, v, tokens.shape[1], out.stride(0), tokens.stride(0),
            MAX_LEN=triton.next_power_of_2(max(int(max_len), 2)),
        )


@triton.jit
def _no_repeat_ngram_kernel(out_ptr, tokens_ptr, V, T, n, stride_o, stride_t, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    start = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    hist = tokens_ptr + row * stride_t
    live = start < T - n + 1
    same = live
    for j in range(0, n - 1):
        a = tl.load(hist + start + j, mask=live, other=-1)
        same = same & (a == tl.load(hist + T - n + 1 + j))
    nxt = tl.load(hist + start + n - 1, mask=same, other=0)
    tl.store(out_ptr + row * stride_o + nxt, float("-inf"), mask=same & (nxt >= 0) & (nxt < V))


def no_repeat_ngram(out: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> None:
    """Bans, in place on `out` `[B, V]`, every id that would repeat an n-gram of `tokens` `[B, T]`."""
    b, v = out.shape
    t, n = tokens.shape[1], int(ngram_size)
    starts = t - n + 1
    if b and starts > 0:
        block = max(16, min(triton.next_power_of_2(starts), 256))
        _no_repeat_ngram_kernel[(b, triton.cdiv(starts, block))](
            out, tokens, v, t, n, out.stride(0), tokens.stride(0), BLOCK=block
        )
