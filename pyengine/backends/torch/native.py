"""PyTorch native implementations of the ops: plain torch calls, same names as `pyengine/ops/`.

These mirror transformers 4.57's processors operation for operation (same sort direction, same
softmax/cumsum dtype), so the tokens they lead to equal transformers' bit for bit. They are also the
fallback every accelerated implementation is measured against. None modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyengine.ops.logits import banned_ngram_tokens


def temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    return scores / temperature


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    score = torch.gather(scores, 1, tokens)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter(1, tokens, score)


def min_length(scores: torch.Tensor, cur_len: int, min_len: int, eos_token_ids: Sequence[int]) -> torch.Tensor:
    if cur_len >= min_len:
        return scores
    out = scores.clone()
    out[:, list(eos_token_ids)] = -float("inf")
    return out


def no_repeat_ngram(scores: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    # NOTE: a Python loop on the host, as in transformers; the C++ kernel (issue 4) replaces it.
    if tokens.shape[1] + 1 < ngram_size:
        return scores
    out = scores.clone()
    for row, history in enumerate(tokens.tolist()):
        banned = banned_ngram_tokens(history, ngram_size)
        if banned:
            out[row, banned] = -float("inf")
    return out


def bad_words(scores: torch.Tensor, tokens: torch.Tensor, bad_words_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    out = scores.clone()
    singles = [w[0] for w in bad_words_ids if len(w) == 1]
    if singles:
        out[:, singles] = -float("inf")
    for word in (w for w in bad_words_ids if len(w) > 1):
        *prefix, last = word
        if len(prefix) > tokens.shape[1]:
            continue
        match = (tokens[:, tokens.shape[1] - len(prefix) :] == tokens.new_tensor(prefix)).all(dim=1)  # [B]
        out[:, last] = torch.where(match, torch.full_like(out[:, last], -float("inf")), out[:, last])
    return out


def forced_token(scores: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    out = torch.full_like(scores, -float("inf"))
    out[:, list(token_ids)] = 0
    return out


def inf_nan_remove(scores: torch.Tensor) -> torch.Tensor:
    out = torch.where(scores != scores, torch.zeros_like(scores), scores)
    return torch.where(out == float("inf"), torch.full_like(out, torch.finfo(out.dtype).max), out)


def top_k_mask(
    scores: torch.Tensor, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    k = min(max(top_k, min_tokens_to_keep), scores.size(-1))
    kth = torch.topk(scores, k)[0][..., -1, None]  # [B, 1]
    return scores.masked_fill(scores < kth, filter_value)


def top_p_mask(
    scores: torch.Tensor, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative_probs <= (1 - top_p)
    sorted_remove[..., -min_tokens_to_keep:] = 0
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, filter_value)


def min_p_mask(
    scores: torch.Tensor, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    probs = torch.softmax(scores, dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    sorted_indices = torch.argsort(scores, descending=True, dim=-1)
    sorted_remove = torch.gather(remove, dim=-1, index=sorted_indices)
    sorted_remove[..., :min_tokens_to_keep] = False
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, filter_value)


def argmax(scores: torch.Tensor) -> torch.Tensor:
    return torch.argmax(scores, dim=-1)


def sample_from_scores(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """`multinomial(softmax(scores))`: the same draw as transformers under the same torch seed."""
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def hamming_diversity(
    scores: torch.Tensor, current_tokens: torch.Tensor, group_idx: int, num_beams: int, num_sub_beams: int,
    penalty: float,
) -> torch.Tensor:
    start = group_idx * num_sub_beams
    if start == 0:
        return scores
    group_size = min(start + num_sub_beams, num_beams) - start
    out = scores.clone()
    for b in range(current_tokens.shape[0] // num_beams):
        previous = current_tokens[b * num_beams : b * num_beams + start]
        freq = torch.bincount(previous, minlength=scores.shape[-1]).to(scores.device)
        out[b * group_size : (b + 1) * group_size] -= penalty * freq
    return out
