"""KVCache: preallocated key/value buffers for PyTorch models, written in place.

One pair of buffers per layer, `[B, H_kv, T_max, D]`. A forward pass of `s` new tokens writes positions
`[length, length + s)` of every layer and then advances `length` once. Nothing is concatenated per step:
the engine sizes the cache to `max_length` up front. A user who calls `forward(use_cache=True)` without
a cache gets one that grows geometrically (amortised O(1) per token) when it fills.

Beam search reorders rows in place without copying every layer's cache: `writer` `[B, T]` records which
forward wrote each row's positions, and `reorder(index)` moves, in every layer, only the positions after
the point where a row's writers and its new parent's differ (`kv_reorder_suffix`; spec in
`pyengine.ops.beam`). Beams share their history up to their common ancestor, so a step moves a few
positions per re-parented row instead of the whole `[B, H, T_max, D]` of every layer.

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
        # Beam reordering (issue 4): which forward wrote each row's positions. Two rows whose writers agree
        # up to position p hold the same keys/values there, so a reorder moves only what follows.
        self.writer = torch.arange(batch_size).repeat_interleave(max_length).view(batch_size, max_length)  # [B, T]
        self._next_writer = batch_size
        # Copy-free reordering (issue 4), once a reader of the row table (the decode path's attention) has
        # asked for it: row b's position t lives in buffer row rows[b, t] ([B, T_max] int64; None = b), a
        # reorder gathers this table instead of moving keys/values, and a new position goes to row b itself.
        self.rows: torch.Tensor | None = None
        self.copy_free = False
        self.reorder_bytes = 0  # bytes moved by reorder() so far (benchmarks, tests)
        self._reorder_fn = None  # kv_reorder_suffix's implementation, chosen at the first reorder

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `key`/`value` `[B, H, s, D]` after the filled part; return views of all `length + s` positions.

        `length` does not move here: the model calls `advance(s)` once after its last layer.
        """
        self._materialize()
        start, end = self.length, self.length + key.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.keys[layer_idx][:, :, start:end] = key
        self.values[layer_idx][:, :, start:end] = value
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        rows = self.writer.shape[0]
        if self.rows is not None:  # the new positions were written to each row's own buffer row
            self.rows[:, self.length : self.length + num_tokens] = torch.arange(rows)[:, None]
        self.writer[:, self.length : self.length + num_tokens] = torch.arange(rows)[:, None] + self._next_writer
        self._next_writer += rows
        self.length += num_tokens

    def fill_from_groups(self, prompt: KVCache, group: int) -> None:
        """Rows `[g * group, (g + 1) * group)` take row g of `prompt` (a cache of `B / group` rows that ran the
        prompt once per group): the filled positions, with one writer per group, so beams that later swap
        rows move only what follows the prompt (see `reorder`)."""
        self._materialize()
        prompt._materialize()
        length = prompt.length
        if self.keys[0].shape[0] != group * prompt.keys[0].shape[0]:
            raise ValueError(f"{self.keys[0].shape[0]} rows cannot take {prompt.keys[0].shape[0]} x {group}")
        if length > self.capacity:
            self._grow(length)
        for mine, theirs in zip(self.keys + self.values, prompt.keys + prompt.values):
            mine.view(-1, group, *mine.shape[1:])[:, :, :, :length] = theirs[:, None, :, :length]
        rows = self.writer.shape[0]
        self.writer[:, :length] = torch.arange(rows).div(group, rounding_mode="floor")[:, None] + self._next_writer
        self._next_writer += rows
        self.length = length

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: new row i continues old row `index[i]` `[B]`, in place, in every layer.

        Once the decode path reads through the row table (`rows_for_decode`), nothing moves: the `[B, T_max]`
        table is gathered instead (8 bytes a position against `layers x 2 x H_kv x D x 4` of keys/values).
        Before that, only positions after the point where row i's writers and row index[i]'s part ways move
        (one op, `kv_reorder_suffix`, for all layers): a beam that keeps its row moves nothing, a beam that
        forks from a sibling moves the few tokens since their common ancestor, not the whole cache.
        """
        length, idx = self.length, index.to(device="cpu", dtype=torch.long)
        if self.copy_free:  # nothing moves: row i now reads what row index[i] read
            table = self.rows if self.rows is not None else torch.arange(idx.shape[0])[:, None].expand(-1, self.capacity)
            self.rows = table.index_select(0, idx)
            return
        parent_writer = self.writer.index_select(0, idx)  # [B, T]
        differs = self.writer[:, :length] != parent_writer[:, :length]  # [B, length]
        start = torch.where(differs.any(dim=1), differs.to(torch.uint8).argmax(dim=1), length)  # first difference
        self.writer = parent_writer
        moved = (idx != torch.arange(idx.shape[0])) & (start < length)
        per_position = sum(b.shape[1] * b.shape[3] * b.element_size() for b in self.keys + self.values)
        self.reorder_bytes += int((length - start[moved]).sum()) * per_position
        if self._reorder_fn is None:
            self._reorder_fn = _reorder_op()
        self._reorder_fn(self.keys + self.values, idx, start, length)

    def rows_for_decode(self) -> torch.Tensor | None:
        """The row table for `decode_attention(rows=...)` (None: every row reads its own); from now on
        reorders only gather the table."""
        self.copy_free = True
        return self.rows

    def _materialize(self) -> None:
        """Move every row's keys/values to its own buffer row (for readers that index the buffers directly)."""
        if self.rows is None:
            return
        length, batch = self.length, self.rows.shape[0]
        where = self.rows[:, :length]
        for buf in self.keys + self.values:
            buf[:, :, :length] = gather_rows(buf, where)
        self.rows = None
        self.writer[:, :length] = torch.arange(batch)[:, None] + self._next_writer  # no shared history known now
        self._next_writer += batch

    def _grow(self, needed: int) -> None:
        self._materialize()
        new_cap = max(needed, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, buf in enumerate(buffers):
                grown = buf.new_zeros(buf.shape[0], buf.shape[1], new_cap, buf.shape[3])
                grown[:, :, : self.length] = buf[:, :, : self.length]
                buffers[i] = grown
        self.writer = torch.cat([self.writer, self.writer[:, -1:].expand(-1, new_cap - self.writer.shape[1])], dim=1)

    # -- transformers Cache surface --------------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._materialize()
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



def gather_rows(buf: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """`out[b, :, t] = buf[where[b, t], :, t]` for a `[B, H_kv, T_max, D]` buffer and `where [B, T]` (a copy)."""
    t = torch.arange(where.shape[1])
    return buf[where, :, t[None, :]].permute(0, 2, 1, 3)  # [B, T, H_kv, D] -> [B, H_kv, T, D]


def _reorder_op():
    """`kv_reorder_suffix` from the torch op table (C++ when built, else native); a cache asks once."""
    from pyengine.backends.torch.backend import OPS  # on use: backend imports the models' modules
    from pyengine.ops.registry import select

    return select("kv_reorder_suffix", OPS["kv_reorder_suffix"]).fn
