"""A paged KV cache: fixed-size blocks in one pool per layer, addressed through per-sequence block tables.

Memory is a pool of `num_blocks` blocks of `block_size` (P) token slots per layer. A sequence owns a block
table (a list of block ids, logical block j = tokens `[jP, (j+1)P)`), so memory held is at most P - 1
slots more than the tokens it holds, and a finished sequence's blocks return to the free list at once.

Blocks are reference counted:

- **Prefix sharing**: a full block is registered under the hash of its token ids chained with the hash of
  every block before it; a new prompt whose leading full blocks match reuses them (refcount + 1) instead
  of recomputing them. A block whose refcount drops to zero keeps its registration and joins an LRU of
  cached-free blocks: it can be revived by the next matching prompt, or evicted when a fresh block is
  needed.
- **Fork + copy-on-write**: `fork(src, dst)` gives `dst` the same table (num_return_sequences > 1, beams);
  the first write into a block held by more than one sequence copies it first.

Pool layout is `[N, P, H_kv, D]` (slot-major) rather than `[N, H_kv, P, D]`: one token's keys for every
head are one contiguous row of `H_kv * D` values, so writing a step's tokens and gathering a sequence are
both row copies (`index_copy_` / `index_select` on the `[N * P, H_kv, D]` view).

`PagedKVView` is what one forward pass sees as `past_key_values`; see its docstring.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pyengine.backends.torch.attention import attention, build_attention_mask
from pyengine.backends.torch.backend import TorchBackend
from pyengine.backends.torch.cache import KVCache


@dataclass
class SeqBlocks:
    """One sequence's view of the pool.

    Fields:
        table: block ids, logical block order.
        num_tokens: positions `[0, num_tokens)` hold keys/values.
        hashes: chained hash of each full block registered so far (prefix sharing), one per full block.
    """

    table: list[int] = field(default_factory=list)
    num_tokens: int = 0
    hashes: list[int] = field(default_factory=list)


class PagedKVCache:
    """Block pools for every layer plus the bookkeeping: free list, refcounts, tables, prefix index.

    Args:
        num_layers, num_kv_heads, head_dim: the model's cache geometry.
        num_blocks: blocks in the pool (see `blocks_for_budget`).
        block_size: token slots per block (P).
        dtype, device: of the pools; match the model's.
        enable_prefix_sharing: reuse identical leading full blocks across sequences.
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int = 16,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        enable_prefix_sharing: bool = True,
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must be >= 1")
        self.num_blocks, self.block_size = num_blocks, block_size
        # One extra block past the pool: the scratch slots that padded columns of a batched prefill write to.
        shape = (num_blocks + 1, block_size, num_kv_heads, head_dim)
        # [N, P, H_kv, D] per layer
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.scratch_slot = num_blocks * block_size
        self.refcount = [0] * num_blocks
        self.filled = [0] * num_blocks  # valid slots per block (utilisation statistics)
        self.free: list[int] = list(range(num_blocks - 1, -1, -1))  # a stack: pop() gives the lowest id
        self.cached_free: OrderedDict[int, None] = OrderedDict()  # refcount 0 but registered, LRU order
        self.prefix_index: dict[int, int] = {}  # chained block hash -> block id
        self.block_hash: dict[int, int] = {}  # block id -> its registered hash
        # block id -> (previous block id or -1, its token ids): checked on every hit, so a hash collision
        # is a miss, never a wrong block.
        self.block_key: dict[int, tuple[int, tuple[int, ...]]] = {}
        self.seqs: dict[int, SeqBlocks] = {}
        self.enable_prefix_sharing = enable_prefix_sharing
        self.peak_blocks_used = 0
        self.prefix_hit_tokens = 0
        self.held_slots = 0  # sum of `filled` over blocks with refcount > 0 (kept incrementally: O(1) stats)
        self.ops = TorchBackend(device).ops  # paged_attention, chosen once

    @staticmethod
    def bytes_per_block(
        num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
    ) -> int:
        """Keys + values of one block over all layers."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize

    # -- capacity -------------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free) + len(self.cached_free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def utilisation(self) -> float:
        """Valid token slots / slots in blocks held (1.0 when nothing is held)."""
        used = self.num_used_blocks
        return self.held_slots / (used * self.block_size) if used else 1.0

    # -- sequences ------------------------------------------------------------------------------------------
    def add_sequence(self, seq_id: int, token_ids: Sequence[int]) -> int:
        """Register a sequence about to prefill `token_ids`; return how many leading tokens are cached.

        Full blocks found in the prefix index are shared. The block holding the last token is never shared,
        so at least one token is computed and the forward yields next-token logits.
        """
        if seq_id in self.seqs:
            raise KeyError(f"sequence {seq_id} is already in the cache")
        seq = self.seqs[seq_id] = SeqBlocks()
        if not self.enable_prefix_sharing:
            return 0
        parent = 0
        for j in range((len(token_ids) - 1) // self.block_size):
            tokens = tuple(token_ids[j * self.block_size : (j + 1) * self.block_size])
            h = hash((parent, tokens))
            block = self.prefix_index.get(h)
            if block is None or self.block_key[block] != (seq.table[-1] if seq.table else -1, tokens):
                break
            self._take(block)
            seq.table.append(block)
            seq.hashes.append(h)
            parent = h
        seq.num_tokens = len(seq.table) * self.block_size
        self.prefix_hit_tokens += seq.num_tokens
        return seq.num_tokens

    def can_append(self, seq_id: int, num_tokens: int) -> bool:
        return self._blocks_to_append(seq_id, num_tokens) <= self.num_free_blocks

    def reserve(self, seq_id: int, num_tokens: int) -> None:
        """Make the next `num_tokens` slots writable: new blocks, and a copy of a shared tail block.

        Raises:
            MemoryError: not enough free blocks (check `can_append` first, or preempt someone).
        """
        if not self.can_append(seq_id, num_tokens):
            raise MemoryError(f"sequence {seq_id} needs more blocks than the {self.num_free_blocks} free")
        seq = self.seqs[seq_id]
        tail = seq.num_tokens // self.block_size
        if seq.num_tokens % self.block_size and self.refcount[seq.table[tail]] > 1:
            seq.table[tail] = self._copy_on_write(seq.table[tail])
        while len(seq.table) < self.blocks_needed(seq.num_tokens + num_tokens):
            seq.table.append(self._allocate())

    def commit(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> None:
        """After a forward wrote keys/values up to position `num_tokens`: advance, register newly full blocks.

        `token_ids` holds at least the sequence's first `num_tokens` ids (to hash blocks that became full).
        """
        seq = self.seqs[seq_id]
        start, seq.num_tokens = seq.num_tokens, num_tokens
        p = self.block_size
        for j in range(start // p, self.blocks_needed(seq.num_tokens)):
            block, filled = seq.table[j], min(p, seq.num_tokens - j * p)
            self.held_slots += filled - self.filled[block]
            self.filled[block] = filled
        self.peak_blocks_used = max(self.peak_blocks_used, self.num_used_blocks)
        if not self.enable_prefix_sharing:
            return
        while len(seq.hashes) < seq.num_tokens // p:
            j = len(seq.hashes)
            tokens = tuple(token_ids[j * p : (j + 1) * p])
            h = hash((seq.hashes[-1] if seq.hashes else 0, tokens))
            seq.hashes.append(h)
            block = seq.table[j]
            if h not in self.prefix_index and block not in self.block_hash:
                self.prefix_index[h] = block
                self.block_hash[block] = h
                self.block_key[block] = (seq.table[j - 1] if j else -1, tokens)

    def fork(self, src_id: int, dst_id: int) -> None:
        """`dst` shares every block of `src` (copy-on-write on the first write into a shared block)."""
        if dst_id in self.seqs:
            raise KeyError(f"sequence {dst_id} is already in the cache")
        self.adopt(dst_id, self.share(src_id))

    def share(self, src_id: int) -> SeqBlocks:
        """A new holder of `src`'s blocks (refcounts + 1), not yet attached to a sequence: see `adopt`.

        Beam search reorders K beams at once (beam k continues beam src[k]); taking every share before
        dropping any old table keeps blocks that survive the reorder from passing through the free list.
        """
        src = self.seqs[src_id]
        for block in src.table:
            self.refcount[block] += 1
        return SeqBlocks(list(src.table), src.num_tokens, list(src.hashes))

    def adopt(self, seq_id: int, blocks: SeqBlocks) -> None:
        """Attach blocks taken with `share` to `seq_id` (which must not hold any)."""
        if seq_id in self.seqs:
            raise KeyError(f"sequence {seq_id} still holds blocks; free it first")
        self.seqs[seq_id] = blocks

    def free_sequence(self, seq_id: int) -> None:
        """Drop a sequence; blocks nobody else holds become free at once (registered ones stay revivable)."""
        seq = self.seqs.pop(seq_id)
        for block in seq.table:
            self.refcount[block] -= 1
            if self.refcount[block] == 0:
                self.held_slots -= self.filled[block]
                if block in self.block_hash:
                    self.cached_free[block] = None
                else:
                    self.filled[block] = 0
                    self.free.append(block)

    def slots(self, seq_id: int, start: int, stop: int) -> list[int]:
        """Flat slot ids (`block * P + offset`) of logical positions `[start, stop)`."""
        p, table = self.block_size, self.seqs[seq_id].table
        return [table[t // p] * p + t % p for t in range(start, stop)]

    # -- block bookkeeping ----------------------------------------------------------------------------------
    def _blocks_to_append(self, seq_id: int, num_tokens: int) -> int:
        seq = self.seqs[seq_id]
        new = max(0, self.blocks_needed(seq.num_tokens + num_tokens) - len(seq.table))
        tail = seq.num_tokens // self.block_size
        shared_tail = seq.num_tokens % self.block_size and self.refcount[seq.table[tail]] > 1
        return new + int(bool(shared_tail))

    def _take(self, block: int) -> None:
        """One more holder of a registered block (reviving it from the cached-free LRU if needed)."""
        if self.refcount[block] == 0:
            del self.cached_free[block]
            self.held_slots += self.filled[block]
        self.refcount[block] += 1

    def _allocate(self) -> int:
        if self.free:
            block = self.free.pop()
        else:  # evict the least recently freed registered block
            block, _ = self.cached_free.popitem(last=False)
            del self.prefix_index[self.block_hash.pop(block)]
            del self.block_key[block]
        self.refcount[block], self.filled[block] = 1, 0
        return block

    def _copy_on_write(self, block: int) -> int:
        new = self._allocate()
        for pool in (*self.keys, *self.values):
            pool[new].copy_(pool[block])
        self.filled[new] = self.filled[block]
        self.held_slots += self.filled[new]
        self.refcount[block] -= 1
        return new


class PagedKVView(KVCache):
    """One forward pass's `past_key_values` over a `PagedKVCache`: the same surface as `KVCache`.

    Row b (a sequence) holds `past[b]` tokens and feeds `new[b]` tokens this forward (decode: 1 each;
    prefill: a chunk each). The inputs are `[B, s]` with s = max new, **left-padded**: row b's tokens sit in
    the last `new[b]` columns. `update(layer, k, v)` writes each row's real new keys/values into its blocks
    (pad columns go to a scratch slot), then gathers every row through its block table into a dense
    `[B, H_kv, L + s, D]` tensor (L = max past), **right-aligned**: row b's past sits at `[L - past[b], L)`
    and its new tokens end at L + s. So every query column i sits at key column L + i, exactly where the
    models' mask builder puts it (`get_seq_length()` returns L), and `attention_mask` `[B, L + s]`
    (1 = a real token) turns into the right causal/padding mask, as for a left-padded batch in `generate()`.
    Position ids must be passed explicitly (`position_ids`): row b's real tokens are at
    `past[b] + arange(new[b])`.

    When no row has a past, the new keys/values are returned as-is (no gather): a lone prompt's first chunk
    runs exactly as `generate()`'s prefill.

    The gather copies each row's cache once per layer per step. A model whose attention layer delegates to
    `attend(layer_idx, query, key, value, scaling)` skips it: `attend` writes the new keys/values and runs
    the `paged_attention` op, which reads the blocks in place through the block tables.

    `packed=True` (prefill passes of models that delegate to `attend`): the model sees ONE row of the rows'
    new tokens concatenated, `[1, sum(new)]`, so its projections and MLP do no work on padding
    (`packed_position_ids`, `packed_last` give the row's positions and each sequence's last column).
    `attend` scatters the packed q/k/v into the left-padded `[B, H, s, D]` layout above, attends as usual
    and packs the output back; everything else is unchanged.
    """

    def __init__(
        self,
        cache: PagedKVCache,
        seq_ids: Sequence[int],
        num_new: int | Sequence[int],
        paged_attention: bool = True,
        packed: bool = False,
    ) -> None:
        # NOTE: KVCache.__init__ is skipped on purpose: nothing dense is allocated. Subclassing keeps the
        # models' `as_kv_cache` check (isinstance KVCache) unchanged.
        self.cache = cache
        self.batch = len(seq_ids)
        counts = [num_new] * self.batch if isinstance(num_new, int) else list(num_new)
        past = torch.tensor([cache.seqs[i].num_tokens for i in seq_ids])  # [B]
        new = torch.tensor(counts)  # [B]
        self.length, self.num_new = int(past.max()), max(counts)
        self.trivial = self.length == 0  # nothing to gather: attention reads the new k, v directly
        tables = [cache.seqs[i].table for i in seq_ids]
        width = max(len(t) for t in tables)
        table = torch.tensor([t + [0] * (width - len(t)) for t in tables])  # [B, M] block ids
        # New-token columns: k = index among the row's new tokens, negative in its left padding.
        k = torch.arange(self.num_new)[None, :] - (self.num_new - new)[:, None]  # [B, s]
        real = k >= 0
        slots = _slots(table, (past[:, None] + k).clamp(min=0), cache.block_size)
        self.write_slots = torch.where(real, slots, cache.scratch_slot).view(-1)  # [B * s]
        self.position_ids = torch.where(real, past[:, None] + k, 0)  # [B, s]
        # Past columns j < L read logical position j - (L - past[b]); new columns read past[b] + k.
        logical = torch.cat(
            [torch.arange(self.length)[None, :] - (self.length - past)[:, None], past[:, None] + k], 1
        )
        valid = torch.cat([logical[:, : self.length] >= 0, real], 1)  # [B, L + s]
        # Invalid columns read the row's position 0 (finite values; the mask hides them).
        self.read_slots = _slots(table, torch.where(valid, logical, 0), cache.block_size).view(
            -1
        )  # [B * (L+s)]
        self.attention_mask = valid.long()  # [B, L + s]
        # For `attend`: the op reads keys through the tables directly.
        self.use_kernel = paged_attention
        self.block_table = table  # [B, M]
        self.context_lens = past + new  # [B]
        self.query_lens = new  # [B]
        # Packed: the real columns of the [B, s] layout in row order, as indices into its flattening.
        self.packed = packed
        self.pack_index = real.view(-1).nonzero().view(-1) if packed else None  # [sum(new)]
        if packed:
            self.packed_position_ids = self.position_ids.view(-1)[self.pack_index][None]  # [1, sum(new)]
            self.packed_last = new.cumsum(0) - 1  # [B]: the column of each row's last new token

    def update(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `key`/`value` `[B, H_kv, s, D]` into the blocks; return all positions `[B, H_kv, L+s, D]`."""
        if self.packed and key.shape[0] != self.batch:
            raise RuntimeError(
                "a packed prefill pass needs a model whose attention calls cache.attend(); this one called "
                "update(). Create the BatchGenerator with packed_prefill=False."
            )
        self._write(layer_idx, key, value)
        if self.trivial:
            return key, value
        out = []
        for pool in (self.cache.keys[layer_idx], self.cache.values[layer_idx]):
            flat = pool.view(-1, pool.shape[2], pool.shape[3])  # [N * P, H, D]
            rows = flat.index_select(0, self.read_slots)  # [B * (L + s), H, D]
            rows = rows.view(self.batch, -1, rows.shape[1], rows.shape[2])  # [B, L + s, H, D]
            out.append(rows.transpose(1, 2))  # [B, H, L + s, D]
        return out[0], out[1]

    def attend(
        self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        """The attention layer's whole job over the paged cache (the models delegate to it when present).

        Writes the new `key`/`value` `[B, H_kv, s, D]` into the blocks, then runs the `paged_attention` op
        over the block tables (no dense copy): `query` `[B, H, s, D]` -> `[B, H, s, D]`, causal within the
        chunk, grouped-query heads, zeros at pad columns. With `paged_attention=False` (or a dtype the
        kernel lacks), the gather path: `update()` + SDPA under this view's mask (the reference path).
        """
        if self.packed:
            query, key, value = (self._unpack(t) for t in (query, key, value))
            return self._pack(self._attend_rows(layer_idx, query, key, value, scaling))
        return self._attend_rows(layer_idx, query, key, value, scaling)

    def _attend_rows(
        self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        if not self.use_kernel or query.dtype != torch.float32:
            keys, values = self.update(layer_idx, key, value)
            mask, is_causal = build_attention_mask(self.attention_mask, self.length, self.num_new, query.device)
            out, _ = attention(query, keys, values, mask, is_causal, scaling)  # [B, s, H, D]
            return out.transpose(1, 2)
        self._write(layer_idx, key, value)
        return self.cache.ops.paged_attention(
            query, self.cache.keys[layer_idx], self.cache.values[layer_idx], self.block_table,
            self.context_lens, self.query_lens, scaling,
        )  # fmt: skip

    def decode_layout(self) -> tuple[list[torch.Tensor], list[torch.Tensor], tuple[torch.Tensor, ...]] | None:
        """What a fused decode step (`decode_layers`) needs to write and attend through the blocks itself:
        (key pools, value pools, (block_table, context_lens, write_slots)), or None when this pass must go
        through `attend` (a prefill chunk, a packed pass, the gather path, another dtype)."""
        if self.packed or self.num_new != 1 or not self.use_kernel or self.cache.keys[0].dtype != torch.float32:
            return None
        return self.cache.keys, self.cache.values, (self.block_table, self.context_lens, self.write_slots)

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """`[1, H, sum(new), D]` (one row of concatenated new tokens) → `[B, H, s, D]`, left-padded with 0."""
        heads, dim = packed.shape[1], packed.shape[3]
        rows = packed.new_zeros(self.batch * self.num_new, heads, dim)
        rows[self.pack_index] = packed[0].transpose(0, 1)
        return rows.view(self.batch, self.num_new, heads, dim).transpose(1, 2)

    def _pack(self, rows: torch.Tensor) -> torch.Tensor:
        """`[B, H, s, D]` → the real columns as one row `[1, H, sum(new), D]`."""
        heads, dim = rows.shape[1], rows.shape[3]
        flat = rows.transpose(1, 2).reshape(self.batch * self.num_new, heads, dim)
        return flat[self.pack_index].transpose(0, 1)[None]

    def _write(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Each row's real new keys/values into its slots; pad columns into the scratch slot."""
        for pool, new in ((self.cache.keys[layer_idx], key), (self.cache.values[layer_idx], value)):
            flat = pool.view(-1, pool.shape[2], pool.shape[3])  # [N * P, H, D]
            flat.index_copy_(0, self.write_slots, new.transpose(1, 2).reshape(-1, new.shape[1], new.shape[3]))

    def advance(self, num_tokens: int) -> None:
        """Bookkeeping moves in `PagedKVCache.commit` (the scheduler knows the token ids); nothing to do."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def __len__(self) -> int:
        return len(self.cache.keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(
            "a PagedKVView is written and read through update(); it has no dense layers"
        )


def blocks_for_budget(
    kv_cache_bytes: int,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
) -> int:
    """How many blocks a byte budget holds (keys and values of every layer, the scratch block included)."""
    per_block = PagedKVCache.bytes_per_block(num_layers, num_kv_heads, head_dim, block_size, dtype)
    blocks = kv_cache_bytes // per_block - 1
    if blocks < 1:
        raise ValueError(
            f"a KV budget of {kv_cache_bytes} bytes holds < 2 blocks of {per_block} bytes; raise it"
        )
    return int(blocks)


def _slots(table: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Flat slot ids `[B, n]` of logical `positions` `[B, n]` through block tables `[B, M]`."""
    return table.gather(1, positions // block_size) * block_size + positions % block_size
