"""Logits processors: spec and NumPy reference for each op. The reference defines the meaning.

Every op takes `scores` `[B, V]` (and, where it needs history, `tokens` `[B, T]`: prompt plus generated
ids) and returns a new array; inputs are never modified. Semantics follow transformers 4.57
`generation/logits_process.py`; the class each op mirrors is named in its docstring.

In place (`inplace=True`): the penalties that change a few entries per row (`repetition_penalty`,
`min_length`, `bad_words`) take an `inplace` flag. With it the op may write its result into `scores` and
return that array, so it costs only the entries it changes instead of a copy of `[B, V]`. Only a caller
that owns `scores` may pass it: the engine's processor chain does, on the fresh logits buffer each step
(`engine.processors.run_chain`). The values returned are the same either way, and callers always use
the returned array: an implementation that cannot write in place (a compiled backend, immutable
tensors) simply omits the parameter, and the engine then calls it without the flag
(`engine.processors.takes_inplace`). The user-visible LogitsProcessor classes never pass it.

History and the compiled loop: a compiled (XLA) loop keeps one fixed-size `[B, max_length]` buffer in
which positions not yet written hold -1 (engine/compiled.py). Ids < 0 are therefore "no token", and the
current length is the number of entries >= 0 in a row (every row has the same length: left padding uses
the pad id). An eager history has no -1, so its length is simply `T`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEG_INF = -np.inf


def temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """`scores / temperature` (TemperatureLogitsWarper)."""
    return scores / np.asarray(temperature, dtype=scores.dtype)


def repetition_penalty(scores: np.ndarray, tokens: np.ndarray, penalty: float, inplace: bool = False) -> np.ndarray:
    """Penalise every token id present in `tokens` once (RepetitionPenaltyLogitsProcessor).

    Negative scores are multiplied by `penalty`, positive ones divided; a score of 0 is unchanged.
    Repeats of a token do not compound: gather and scatter of duplicates write the same value.
    `inplace`: write into `scores` (see the module docstring).
    """
    out = scores if inplace else scores.copy()
    for row in range(scores.shape[0]):
        ids = np.unique(written(tokens)[row])
        s = scores[row, ids]
        out[row, ids] = np.where(s < 0, s * penalty, s / penalty)
    return out


def seq_length(tokens: np.ndarray) -> int:
    """The history's current length: entries >= 0 in a row (all rows have the same length)."""
    return int((tokens[0] >= 0).sum()) if tokens.shape[0] else tokens.shape[1]


def written(tokens: np.ndarray) -> np.ndarray:
    """The written part `[B, seq_length]` of a history (drops the -1 tail of a compiled-loop buffer)."""
    return tokens[:, : seq_length(tokens)]


def min_length(
    scores: np.ndarray, tokens: np.ndarray, min_len: int, eos_token_ids: Sequence[int], inplace: bool = False
) -> np.ndarray:
    """Ban EOS while the length (prompt included) is below `min_len` (MinLengthLogitsProcessor).

    MinNewTokensLengthLogitsProcessor is the same op with `min_len = prompt_length + min_new_tokens`.
    `inplace`: write into `scores` (see the module docstring).
    """
    out = scores if inplace else scores.copy()
    if seq_length(tokens) < min_len:
        out[:, list(eos_token_ids)] = NEG_INF
    return out


def no_repeat_ngram(scores: np.ndarray, tokens: np.ndarray, ngram_size: int) -> np.ndarray:
    """Ban every token that would repeat an n-gram already in the row (NoRepeatNGramLogitsProcessor).

    The row's whole history counts, prompt included. Nothing is banned while `cur_len + 1 < n`.
    """
    out = scores.copy()
    tokens = written(tokens)
    cur_len = tokens.shape[1]
    if cur_len + 1 < ngram_size:
        return out
    for row in range(tokens.shape[0]):
        out[row, banned_ngram_tokens(tokens[row].tolist(), ngram_size)] = NEG_INF
    return out


def banned_ngram_tokens(row: list[int], n: int) -> list[int]:
    """Tokens that follow an earlier occurrence of the row's last `n-1` tokens."""
    prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
    banned = []
    for start in range(len(row) - n + 1):
        if tuple(row[start : start + n - 1]) == prefix:
            banned.append(row[start + n - 1])
    return banned


def bad_words(
    scores: np.ndarray, tokens: np.ndarray, bad_words_ids: Sequence[Sequence[int]], inplace: bool = False
) -> np.ndarray:
    """Ban words (NoBadWordsLogitsProcessor).

    A one-token word is always banned. For a longer word `[t1..tk]`, `tk` is banned in the rows whose
    history ends with `[t1..t(k-1)]`; its earlier tokens stay allowed. `inplace`: write into `scores`
    (see the module docstring).
    """
    out = scores if inplace else scores.copy()
    tokens = written(tokens)
    for word in bad_words_ids:
        *prefix, last = word
        for row in range(tokens.shape[0]):
            if not prefix or (len(prefix) <= tokens.shape[1] and tokens[row, tokens.shape[1] - len(prefix) :].tolist() == prefix):
                out[row, last] = NEG_INF
    return out


def forced_token(scores: np.ndarray, tokens: np.ndarray, at_len: int, token_ids: Sequence[int]) -> np.ndarray:
    """At length `at_len`, every score becomes -inf except `token_ids`, which become 0; otherwise unchanged.

    ForcedBOSTokenLogitsProcessor is `at_len=1`, ForcedEOSTokenLogitsProcessor `at_len=max_length-1`.
    """
    if seq_length(tokens) != at_len:
        return scores.copy()
    out = np.full_like(scores, NEG_INF)
    out[:, list(token_ids)] = 0
    return out


def inf_nan_remove(scores: np.ndarray) -> np.ndarray:
    """NaN becomes 0, +inf the dtype's max, -inf the dtype's min (InfNanRemoveLogitsProcessor, 4.57).

    transformers <= 4.4x kept -inf; 4.57 maps it to the finite minimum, so a row whose every token was
    banned can still be sampled (uniformly).
    """
    info = np.finfo(scores.dtype)
    out = np.where(np.isnan(scores), 0.0, scores).astype(scores.dtype)
    out = np.where(out == np.inf, info.max, out).astype(scores.dtype)
    return np.where(out == -np.inf, info.min, out).astype(scores.dtype)


def hamming_diversity(
    scores: np.ndarray, current_tokens: np.ndarray, group_idx: int, num_beams: int, num_sub_beams: int, penalty: float
) -> np.ndarray:
    """Group beam search: penalise tokens chosen by earlier groups at this step (HammingDiversityLogitsProcessor).

    `scores` holds one group's rows `[B * group_size, V]`; `current_tokens` `[B * num_beams]` the tokens
    the earlier groups picked this step. Each token's score drops by `penalty` times its frequency among
    the earlier groups of the same batch item. Group 0 is unchanged.
    """
    start = group_idx * num_sub_beams
    if start == 0:
        return scores
    group_size = min(start + num_sub_beams, num_beams) - start
    out = scores.copy()
    for b in range(current_tokens.shape[0] // num_beams):
        previous = current_tokens[b * num_beams : b * num_beams + start]
        freq = np.bincount(previous, minlength=scores.shape[-1])[: scores.shape[-1]]
        out[b * group_size : (b + 1) * group_size] -= penalty * freq.astype(scores.dtype)
    return out
