"""The `paged_attention` op: attention that reads keys/values through block tables, in place.

Layout (the batch engine's `PagedKVCache`): key/value pools `[N, P, H_kv, D]`; row b's logical position j
is in block `block_table[b, j // P]`, slot `j % P`. Queries `[B, H, s, D]` are a left-padded chunk per row:
the last `query_lens[b]` columns are real, column i sits at position `context_lens[b] - s + i` and attends
to positions `[0, that position]` (causal within the chunk; the chunk's own keys must already be written).
Head h reads kv head `h // (H / H_kv)` (grouped-query attention). Pad columns give zeros.

Implementations (torch op table `paged_attention`, preference order):
- `cpp`: csrc/torch/cpu/paged_attention.cpp, float32 pools on the CPU; no dense copy of the cache.
- `native`: gathers each row's keys/values through its table, then SDPA with the matching mask.
`paged_attention_reference` (NumPy, float64) defines the meaning; tests compare both with it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def paged_attention_reference(
    query: np.ndarray,
    key_pool: np.ndarray,
    value_pool: np.ndarray,
    block_table: np.ndarray,
    context_lens: np.ndarray,
    query_lens: np.ndarray,
    scale: float,
) -> np.ndarray:
    """The spec, one query at a time in float64. Shapes as in the module docstring; returns `[B, H, s, D]`."""
    B, H, s, D = query.shape
    P, Hkv = key_pool.shape[1], key_pool.shape[2]
    out = np.zeros((B, H, s, D), dtype=np.float64)
    for b in range(B):
        for i in range(s - int(query_lens[b]), s):
            pos = int(context_lens[b]) - s + i
            blocks = block_table[b, np.arange(pos + 1) // P]
            slots = np.arange(pos + 1) % P
            for h in range(H):
                k = key_pool[blocks, slots, h // (H // Hkv)].astype(np.float64)  # [pos + 1, D]
                v = value_pool[blocks, slots, h // (H // Hkv)].astype(np.float64)
                logits = k @ query[b, h, i].astype(np.float64) * scale
                p = np.exp(logits - logits.max())
                out[b, h, i] = (p / p.sum()) @ v
    return out.astype(query.dtype)


def paged_attention_native(
    query: torch.Tensor,
    key_pool: torch.Tensor,
    value_pool: torch.Tensor,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    query_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Gather + SDPA: each row's `[0, max context)` keys/values through its table, masked per row."""
    B, H, s, D = query.shape
    P, Hkv = key_pool.shape[1], key_pool.shape[2]
    length = int(context_lens.max())
    j = torch.arange(length, device=query.device)[None, :]  # [1, L]
    valid = j < context_lens[:, None]  # [B, L]
    slots = block_table.gather(1, torch.where(valid, j, 0) // P) * P + j % P  # [B, L]
    keys = key_pool.view(-1, Hkv, D)[slots].transpose(1, 2)  # [B, H_kv, L, D]
    values = value_pool.view(-1, Hkv, D)[slots].transpose(1, 2)
    pos = context_lens[:, None] - s + torch.arange(s, device=query.device)[None, :]  # [B, s]
    real = torch.arange(s, device=query.device)[None, :] >= (s - query_lens)[:, None]  # [B, s]
    mask = (j[:, None, :] <= pos[:, :, None]) & valid[:, None, :]  # [B, s, L]
    mask = mask | ~real[:, :, None] & (j[:, None, :] == 0)  # pad columns see key 0: finite, then zeroed
    out = F.scaled_dot_product_attention(
        query, keys, values, attn_mask=mask[:, None], scale=scale, enable_gqa=H != Hkv
    )  # [B, H, s, D]
    return out * real[:, None, :, None]
