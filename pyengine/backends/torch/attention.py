"""Attention for the PyTorch models: the mask from a 2-D padding mask, SDPA with an eager reference path.

`attention()` is the one entry point the model families call; SDPA is the default and the eager path
(explicit softmax in float32, transformers' eager attention) is the named reference, used whenever the
attention probabilities are requested.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pyengine.backends.torch.cache import KVCache


def build_attention_mask(
    attention_mask: torch.Tensor | None, past_length: int, query_length: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Boolean attention mask `[B, 1, S, T]` (True = attend) from a 2-D padding mask `[B, T]`.

    Key `j` is visible to query `i` (at absolute position `past_length + i`) when it is not in the future
    and `attention_mask[b, j] == 1`. The diagonal is always visible: a query at a padded position then
    attends to itself instead of to nothing, so its output stays finite (a NaN in a padded row would be
    written to the KV cache and poison real tokens later through `0 * NaN`). Real tokens never see pad
    keys, so their outputs equal transformers'.

    Returns:
        `(mask, is_causal)`: `mask` is None when no mask is needed; `is_causal` asks SDPA for its own
        causal mask (no padding, no past).
    """
    total = past_length + query_length
    if attention_mask is None:
        if query_length == 1:
            return None, False
        if past_length == 0:
            return None, True
        attention_mask = torch.ones(1, total, dtype=torch.bool, device=device)
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D [batch, past + new tokens], got shape {tuple(attention_mask.shape)}")
    if attention_mask.shape[1] < total:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[1]} positions but past ({past_length}) + new "
            f"({query_length}) tokens = {total}; pass a mask over the whole sequence."
        )
    keys_ok = attention_mask[:, -total:].to(device=device, dtype=torch.bool)  # [B, T]
    query_pos = torch.arange(past_length, total, device=device)[:, None]  # [S, 1]
    key_pos = torch.arange(total, device=device)[None, :]  # [1, T]
    allowed = (key_pos <= query_pos)[None] & keys_ok[:, None, :]  # [B, S, T]
    allowed = allowed | (key_pos == query_pos)[None]
    return allowed[:, None], False  # [B, 1, S, T]


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_p: float = 0.0,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention over `query [B, H, S, D]`, `key`/`value [B, H_kv, T, D]` (GQA when H_kv < H).

    SDPA by default; the explicit eager path runs when the probabilities are wanted
    (`output_attentions=True`), with the softmax in float32 as transformers' eager attention.

    Returns:
        `(output [B, S, H, D], probs [B, H, S, T] or None)`.
    """
    groups = query.shape[1] // key.shape[1]
    if not output_attentions:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=groups > 1,
        )  # [B, H, S, D]
        return out.transpose(1, 2), None
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)  # [B, H, T, D]
        value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scale  # [B, H, S, T]
    if is_causal:
        s, t = scores.shape[-2:]
        mask = torch.ones(s, t, dtype=torch.bool, device=scores.device).tril(t - s)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, value).transpose(1, 2), probs


def as_kv_cache(past_key_values: Any) -> KVCache | None:
    """None, a `KVCache`, or transformers' legacy tuple of `(k, v)` `[B, H, T, D]` per layer → `KVCache`."""
    if past_key_values is None or isinstance(past_key_values, KVCache):
        return past_key_values
    if isinstance(past_key_values, (tuple, list)):
        return KVCache.from_legacy_cache(tuple(past_key_values)) if len(past_key_values) else None
    raise TypeError(
        f"past_key_values must be None, a pyengine KVCache or a tuple of (key, value) pairs; got "
        f"{type(past_key_values).__name__}."
    )
