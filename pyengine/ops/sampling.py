"""Sampling warpers and token selection: spec and NumPy reference.

Warpers return scores with the removed tokens set to `filter_value`; they never modify their input.
Semantics follow transformers 4.57 (TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper). The
stochastic op takes its noise as an argument so the reference is deterministic.
"""

from __future__ import annotations

import numpy as np


def top_k_mask(scores: np.ndarray, top_k: int, filter_value: float = -np.inf, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep the tokens whose score is >= the k-th largest score of the row.

    Ties at the k-th value are all kept, so more than k tokens can survive (as transformers does).
    `k = min(max(top_k, min_tokens_to_keep), V)`.
    """
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = -np.sort(-scores, axis=-1)[:, k - 1 : k]  # [B, 1]
    return np.where(scores < kth, filter_value, scores).astype(scores.dtype)


def top_p_mask(scores: np.ndarray, top_p: float, filter_value: float = -np.inf, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Nucleus filter, transformers >= 4.26 formula.

    Sort ascending; remove the tokens whose cumulative probability is `<= 1 - top_p`; the
    `min_tokens_to_keep` most likely tokens always stay. Ties in the sort follow a stable order.
    """
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = np.take_along_axis(scores, order, axis=-1).astype(np.float64)
    probs = _softmax(sorted_scores)
    remove_sorted = np.cumsum(probs, axis=-1) <= (1 - top_p)
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, filter_value, scores).astype(scores.dtype)


def min_p_mask(scores: np.ndarray, min_p: float, filter_value: float = -np.inf, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Remove tokens with probability below `min_p * max_prob`; the `min_tokens_to_keep` best stay."""
    probs = _softmax(scores.astype(np.float64))
    remove = probs < min_p * probs.max(axis=-1, keepdims=True)
    order = np.argsort(-scores, axis=-1, kind="stable")
    keep_first = np.zeros_like(remove)
    np.put_along_axis(keep_first, order[:, :min_tokens_to_keep], True, axis=-1)
    return np.where(remove & ~keep_first, filter_value, scores).astype(scores.dtype)


def argmax(scores: np.ndarray) -> np.ndarray:
    """Greedy selection `[B]`; ties go to the lowest token id."""
    return np.argmax(scores, axis=-1)


def sample_from_scores(scores: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Draw one token per row from `softmax(scores)` by inverse CDF with noise `uniform` `[B]` in [0, 1).

    Tokens with probability 0 (score -inf) are never drawn.
    """
    probs = _softmax(scores.astype(np.float64))
    cdf = np.cumsum(probs, axis=-1)
    picks = (cdf <= (uniform[:, None] * cdf[:, -1:])).sum(axis=-1)
    # Guard rounding at the top end: never step past the last token with non-zero probability.
    last_nonzero = probs.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(picks, last_nonzero)


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)
