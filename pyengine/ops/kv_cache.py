"""KV-cache copies: spec and NumPy reference. Dense append/reorder, and a paged layout for beam search.

Dense: `cache` `[B, H, T, D]`; `kv_append` writes `values` `[B, H, s, D]` at positions `[start, start+s)`;
`kv_reorder` replaces row b by row `index[b]` (beam search). A dense reorder copies every layer's whole
cache each step.

Paged (beam reordering without copying the cache): each layer's cache is a pool `[N, H, P, D]` of N blocks
of P tokens, and one block table `[B, M]` (int64, -1 = unallocated) shared by all layers maps row b's
logical block j (tokens `[jP, (j+1)P)`) to a pool block. Per step:

    table, src, dst = kv_block_prepare(table, index, length, count, P, N)   # once, ints only
    for each layer: kv_copy_blocks(pool, src, dst); kv_append_paged(pool, table, new_kv, length)
    attention reads kv_gather_paged(pool, table, length + count)  (or indexes the pool through the table)

`kv_block_prepare` gathers table rows by `index` (beams share their parents' full blocks read-only), then
makes every block that will receive tokens `[length, length + count)` exclusive to its row: the first row
(in batch order) holding a shared, partially filled tail block keeps it, each other one gets a copy
(`src -> dst`, at most B blocks of P tokens per layer); columns past the tail get fresh blocks. Free blocks
are those no row references in its first `ceil(length / P)` columns; allocation takes the lowest free id.
"""

from __future__ import annotations

import numpy as np


def kv_append(cache: np.ndarray, values: np.ndarray, start: int) -> None:
    """`cache[:, :, start:start+s] = values` in place."""
    cache[:, :, start : start + values.shape[2]] = values


def kv_reorder(cache: np.ndarray, index: np.ndarray) -> None:
    """`cache[b] = cache[index[b]]` for every row, in place."""
    cache[:] = cache[np.asarray(index)]


def kv_append_paged(pool: np.ndarray, block_table: np.ndarray, values: np.ndarray, start: int) -> None:
    """Write `values` `[B, H, s, D]` at logical positions `[start, start+s)` of each row, in place."""
    p = pool.shape[2]
    for b in range(values.shape[0]):
        for j in range(values.shape[2]):
            pos = start + j
            pool[block_table[b, pos // p], :, pos % p] = values[b, :, j]


def kv_gather_paged(pool: np.ndarray, block_table: np.ndarray, length: int) -> np.ndarray:
    """The dense cache `[B, H, length, D]` the table describes."""
    p = pool.shape[2]
    pos = np.arange(length)
    blocks = block_table[:, pos // p]  # [B, length]
    return pool[blocks, :, pos % p].transpose(0, 2, 1, 3)


def kv_copy_blocks(pool: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """`pool[dst[i]] = pool[src[i]]` in place."""
    pool[np.asarray(dst)] = pool[np.asarray(src)]


def kv_block_prepare(
    block_table: np.ndarray, index: np.ndarray, length: int, count: int, block_size: int, num_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder the table by `index` and make room for `count` tokens at `length`: `(table, src, dst)`."""
    p, batch, width = block_size, block_table.shape[0], block_table.shape[1]
    used, last = -(-length // p), (length + count - 1) // p
    if last >= width:
        raise ValueError(f"{length + count} tokens need {last + 1} blocks per row; the table has {width}")
    out = np.full_like(block_table, -1)
    out[:, :used] = block_table[np.asarray(index), :used]
    busy = np.zeros(num_blocks, bool)
    busy[out[:, :used].ravel()] = True
    claimed = np.zeros(num_blocks, bool)
    src, dst = [], []
    for b in range(batch):
        for j in range(length // p, last + 1):
            if j < used and not claimed[out[b, j]]:
                claimed[out[b, j]] = True
                continue
            free = np.flatnonzero(~busy)
            if free.size == 0:
                raise RuntimeError(f"the pool's {num_blocks} blocks are exhausted")
            busy[free[0]] = claimed[free[0]] = True
            if j < used:
                src.append(out[b, j])
                dst.append(free[0])
            out[b, j] = free[0]
    return out, np.array(src, np.int64), np.array(dst, np.int64)
