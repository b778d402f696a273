"""PyTorch native implementations of the ops: plain torch calls, same names as `pyengine/ops/`.

These mirror transformers 4.57's processors operation for operation (same sort direction, same
softmax/cumsum dtype), so the tokens they lead to equal transformers' bit for bit. They are also the
fallback every accelerated implementation is measured against. None modifies its inputs, except the
penalties called with `inplace=True` (`pyengine/ops/logits.py`), which write into `scores` and return it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyengine.ops.logits import banned_ngram_tokens


def temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    return scores / temperature


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float, inplace: bool = False) -> torch.Tensor:
    score = torch.gather(scores, 1, tokens)  # every penalised score is read before any is written
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter_(1, tokens, score) if inplace else scores.scatter(1, tokens, score)


def min_length(
    scores: torch.Tensor, tokens: torch.Tensor, min_len: int, eos_token_ids: Sequence[int], inplace: bool = False
) -> torch.Tensor:
    if tokens.shape[1] >= min_len:  # an eager history holds no -1: its length is its width
        return scores
    out = scores if inplace else scores.clone()
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


def bad_words(
    scores: torch.Tensor, tokens: torch.Tensor, bad_words_ids: Sequence[Sequence[int]], inplace: bool = False
) -> torch.Tensor:
    out = scores if inplace else scores.clone()
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


def forced_token(scores: torch.Tensor, tokens: torch.Tensor, at_len: int, token_ids: Sequence[int]) -> torch.Tensor:
    if tokens.shape[1] != at_len:
        return scores
    out = torch.full_like(scores, -float("inf"))
    out[:, list(token_ids)] = 0
    return out


def inf_nan_remove(scores: torch.Tensor) -> torch.Tensor:
    info = torch.finfo(scores.dtype)
    out = torch.where(scores != scores, torch.zeros_like(scores), scores)
    out = torch.where(out == float("inf"), torch.full_like(out, info.max), out)
    return torch.where(out == -float("inf"), torch.full_like(out, info.min), out)


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


# --- issue 4: fused selection, counter-based noise, n-gram table, KV cache (plain torch fallbacks) ---


def uniform(seed, step, row_key=0) -> torch.Tensor:
    """`[B]` float64 counter-based uniforms (`pyengine.ops.random`): B integer hashes on the host."""
    from pyengine.ops import random as spec

    args = (torch.as_tensor(v, dtype=torch.int64).reshape(-1) for v in (seed, step, row_key))
    cols = [t.tolist() for t in torch.broadcast_tensors(*args)]
    return torch.tensor([spec.uniform(s, t, k) for s, t, k in zip(*cols)], dtype=torch.float64)


def _per_row(value, batch: int, dtype: torch.dtype) -> list:
    t = torch.as_tensor(value, dtype=dtype).reshape(-1)
    return (t.expand(batch) if t.numel() == 1 else t).tolist()


def _fused_logits(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids) -> list[torch.Tensor]:
    """Per row `[1, V]` float64: penalty (float32, as transformers), min-length EOS ban, banned ids."""
    b = scores.shape[0]
    lens = _per_row(tokens.shape[1] if cur_len is None else cur_len, b, torch.int64)
    pens, mins = _per_row(penalty, b, torch.float64), _per_row(min_len, b, torch.int64)
    rows = []
    for r in range(b):
        x = scores[r : r + 1].float()
        if pens[r] != 1.0:
            x = repetition_penalty(x, tokens[r : r + 1, : lens[r]], float(torch.tensor(pens[r], dtype=torch.float32)))
        x = x.double()
        banned = list(banned_ids) + (list(eos_token_ids) if lens[r] < mins[r] else [])
        if banned:
            x[:, banned] = -float("inf")
        rows.append(x)
    return rows


def fused_sample(
    scores, tokens, cur_len=None, penalty=1.0, min_len=0, eos_token_ids=(), banned_ids=(), temperature=1.0,
    top_k=0, top_p=1.0, min_p=0.0, seed=0, step=0, min_tokens_to_keep=1,
) -> torch.Tensor:
    """`pyengine.ops.fused.fused_sample` with the native warpers, one row at a time (float64)."""
    b = scores.shape[0]
    temps, ks = _per_row(temperature, b, torch.float64), _per_row(top_k, b, torch.int64)
    ps, mps = _per_row(top_p, b, torch.float64), _per_row(min_p, b, torch.float64)
    u = uniform(_per_row(seed, b, torch.int64), _per_row(step, b, torch.int64)).tolist()
    out = torch.zeros(b, dtype=torch.int64)
    for r, x in enumerate(_fused_logits(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)):
        if not torch.isfinite(x).any():
            continue
        x = x / temps[r]
        if ks[r] > 0:
            x = top_k_mask(x, ks[r], -float("inf"), min_tokens_to_keep)
        if ps[r] < 1.0:
            x = top_p_mask(x, ps[r], -float("inf"), min_tokens_to_keep)
        if mps[r] > 0.0:
            x = min_p_mask(x, mps[r], -float("inf"), min_tokens_to_keep)
        probs = torch.softmax(x[0], dim=-1)
        cdf = torch.cumsum(probs, dim=-1)
        pick = int((cdf <= u[r] * cdf[-1]).sum())
        out[r] = min(pick, int(torch.nonzero(probs > 0).max()))
    return out


def fused_argmax(scores, tokens, cur_len=None, penalty=1.0, min_len=0, eos_token_ids=(), banned_ids=()) -> torch.Tensor:
    rows = _fused_logits(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)
    return torch.cat([torch.argmax(x, dim=-1) for x in rows])


def ngram_table_init(batch: int, max_len: int) -> torch.Tensor:
    from pyengine.ops import ngram as spec

    return torch.from_numpy(spec.ngram_table_init(batch, max_len))


def ngram_table_add(table: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    """The reference's table update on the tensor's memory (CPU): the same layout as the C++ kernel."""
    from pyengine.ops import ngram as spec

    spec.ngram_table_add(table.numpy(), tokens.cpu().numpy(), ngram_size)
    return table


def ngram_ban(scores: torch.Tensor, table: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    from pyengine.ops import ngram as spec

    out = scores.clone()
    n, t = ngram_size, tokens.shape[1]
    if t < n - 1:
        return out
    for b, hist in enumerate(tokens.tolist()):
        prefix = hist[t - n + 1 :]
        h = spec.hash_tokens(prefix)
        banned = [hist[pos + n - 1] for sh, pos, _ in spec._probe(table[b].numpy(), h) if sh == h and hist[pos : pos + n - 1] == prefix]
        if banned:
            out[b, banned] = -float("inf")
    return out


def kv_append(cache: torch.Tensor, values: torch.Tensor, start: int) -> None:
    cache[:, :, start : start + values.shape[2]] = values


def kv_reorder(cache: torch.Tensor, index: torch.Tensor) -> None:
    cache.copy_(cache.index_select(0, index))


def kv_append_paged(pool: torch.Tensor, block_table: torch.Tensor, values: torch.Tensor, start: int) -> None:
    p = pool.shape[2]
    pos = torch.arange(start, start + values.shape[2])
    blocks = block_table[:, pos // p]  # [B, s]
    pool[blocks, :, pos % p] = values.transpose(1, 2)  # values as [B, s, H, D]


def kv_gather_paged(pool: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    p = pool.shape[2]
    pos = torch.arange(length)
    return pool[block_table[:, pos // p], :, pos % p].transpose(1, 2).contiguous()  # [B, H, length, D]


def kv_copy_blocks(pool: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    pool[dst] = pool[src]


def kv_block_prepare(block_table, index, length, count, block_size, num_blocks):
    """The reference's bookkeeping (ints only, on the host)."""
    from pyengine.ops import kv_cache as spec

    out = spec.kv_block_prepare(block_table.cpu().numpy(), index.cpu().numpy(), length, count, block_size, num_blocks)
    return tuple(torch.from_numpy(a) for a in out)
