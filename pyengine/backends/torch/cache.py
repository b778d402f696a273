"""KVCache: preallocated key/value buffers for PyTorch models, written in place.

One pair of buffers per layer, `[B, H_kv, T_max, D]`. A forward pass of `s` new tokens writes positions
`[length, length + s)` of every layer and then advances `length` once. Nothing is concatenated per step:
the engine sizes the cache to `max_length` up front. A user who calls `forward(use_cache=True)` without
a cache gets one that grows geometrically (amortised O(1) per token) when it fills.

It also answers the parts of transformers' `Cache` API that user code touches: `get_seq_length()`,
`len(cache)`, `cache[layer] -> (k, v)` and `to_legacy_cache()`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer K/V buffers `[B, H_kv, T_max, D]` and the number of filled positions.

    Args:
        num_layers: decoder layers.
        batch_size: rows `B` (batch x beams x return sequences).
        num_kv_heads: key/value heads `H_kv`.
        head_dim: `D`.
        max_length: capacity `T_max` in tokens (prompt + new tokens).
        dtype, device: of the buffers; match the model's.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, num_kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]  # [B, H, T, D]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0  # positions [0, length) hold valid keys/values

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `key`/`value` `[B, H, s, D]` after the filled part; return views of all `length + s` positions.

        `length` does not move here: the model calls `advance(s)` once after its last layer.
        """
        start, end = self.length, self.length + key.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.keys[layer_idx][:, :, start:end] = key
        self.values[layer_idx][:, :, start:end] = value
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def reorder(self, index: torch.Tensor) -> None:
        """Gather rows `index` `[B]` (beam search: new beam i continues old beam index[i])."""
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                buffers[i] = buf.index_select(0, index)

    def _grow(self, needed: int) -> None:
        new_cap = max(needed, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                grown = buf.new_zeros(buf.shape[0], buf.shape[1], new_cap, buf.shape[3])
                grown[:, :, : self.length] = buf[:, :, : self.length]
                buffers[i] = grown

    # -- transformers Cache surface --------------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer_idx][:, :, : self.length], self.values[layer_idx][:, :, : self.length]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        return tuple(self)

    @classmethod
    def from_legacy_cache(cls, past: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> KVCache:
        """Build from transformers' tuple-of-(k, v) format `[B, H, T, D]` each."""
        k0 = past[0][0]
        cache = cls(len(past), k0.shape[0], k0.shape[1], k0.shape[3], k0.shape[2], k0.dtype, k0.device)
        for i, (k, v) in enumerate(past):
            cache.keys[i].copy_(k)
            cache.values[i].copy_(v)
        cache.length = k0.shape[2]
        return cache
