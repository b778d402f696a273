"""KV-cache copies in Triton: dense append / beam reorder, and the paged pool's scatter, gather and block copy.

Spec: `pyengine.ops.kv_cache`. Every kernel moves whole head vectors of D elements; nothing is computed.

    kv_append        grid (B * H * s,): values [B, H, s, D] -> cache [B, H, T, D] at [start, start + s).
                     Traffic: 2 * B * H * s * D elements.
    kv_gather_rows   grid (B, ceil(H * T * D / BLOCK)): out[b] = cache[index[b]] (the beam reorder; the
                     launcher copies back, since rows may swap). Traffic: 2 * B * H * T * D (x2 with the copy).
    kv_append_paged  grid (B * s, H): values[b, h, j] -> pool[table[b, pos // P], h, pos % P], pos = start + j.
                     Traffic: 2 * B * H * s * D elements + B * s table reads.
    kv_gather_paged  grid (B * length, H): the dense [B, H, length, D] view of the pool. Traffic: 2 * B * H * length * D.
    kv_copy_blocks   grid (n, ceil(H * P * D / BLOCK)): pool[dst[i]] = pool[src[i]]. Traffic: 2 * n * H * P * D.
Negative block ids (unallocated) are skipped, never followed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_append_kernel(cache_ptr, values_ptr, start, H, S, D, cs0, cs1, cs2, vs0, vs1, vs2, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    j = pid % S
    h = (pid // S) % H
    b = pid // (S * H)
    d = tl.arange(0, BLOCK_D)
    x = tl.load(values_ptr + b * vs0 + h * vs1 + j * vs2 + d, mask=d < D)
    tl.store(cache_ptr + b * cs0 + h * cs1 + (start + j) * cs2 + d, x, mask=d < D)


def kv_append(cache: torch.Tensor, values: torch.Tensor, start: int) -> None:
    """`cache[:, :, start:start + s] = values` in place (last dims unit-stride)."""
    b, h, s, d = values.shape
    if b * h * s:
        _kv_append_kernel[(b * h * s,)](
            cache, values, int(start), h, s, d, cache.stride(0), cache.stride(1), cache.stride(2),
            values.stride(0), values.stride(1), values.stride(2), BLOCK_D=triton.next_power_of_2(d),
        )


@triton.jit
def _gather_rows_kernel(src_ptr, dst_ptr, index_ptr, row_numel, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    src_row = tl.load(index_ptr + b)
    x = tl.load(src_ptr + src_row * row_numel + offs, mask=offs < row_numel)
    tl.store(dst_ptr + b * row_numel + offs, x, mask=offs < row_numel)


def kv_gather_rows(cache: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`cache[index]` for a contiguous cache `[B, ...]` and int64 `index` `[B]` (new tensor)."""
    out = torch.empty_like(cache)
    b = cache.shape[0]
    row = cache[0].numel() if b else 0
    if b and row:
        block = max(16, min(triton.next_power_of_2(row), 4096))
        _gather_rows_kernel[(b, triton.cdiv(row, block))](cache, out, index, row, BLOCK=block)
    return out


@triton.jit
def _kv_append_paged_kernel(pool_ptr, table_ptr, values_ptr, start, S, P, D, ps0, ps1, ps2, ts0, vs0, vs1, vs2,
                            BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    b = pid // S
    j = pid % S
    pos = start + j
    blk = tl.load(table_ptr + b * ts0 + pos // P)
    d = tl.arange(0, BLOCK_D)
    x = tl.load(values_ptr + b * vs0 + h * vs1 + j * vs2 + d, mask=d < D)
    tl.store(pool_ptr + blk * ps0 + h * ps1 + (pos % P) * ps2 + d, x, mask=(d < D) & (d * 0 + blk >= 0))


def kv_append_paged(pool: torch.Tensor, block_table: torch.Tensor, values: torch.Tensor, start: int) -> None:
    """Writes `values` `[B, H, s, D]` at logical positions `[start, start + s)` of each row, in place."""
    b, h, s, d = values.shape
    if b * h * s:
        _kv_append_paged_kernel[(b * s, h)](
            pool, block_table, values, int(start), s, pool.shape[2], d, pool.stride(0), pool.stride(1),
            pool.stride(2), block_table.stride(0), values.stride(0), values.stride(1), values.stride(2),
            BLOCK_D=triton.next_power_of_2(d),
        )


@triton.jit
def _kv_gather_paged_kernel(pool_ptr, table_ptr, out_ptr, L, H, P, D, ps0, ps1, ps2, ts0, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    b = pid // L
    pos = pid % L
    blk = tl.load(table_ptr + b * ts0 + pos // P)
    d = tl.arange(0, BLOCK_D)
    x = tl.load(pool_ptr + blk * ps0 + h * ps1 + (pos % P) * ps2 + d, mask=(d < D) & (d * 0 + blk >= 0), other=0.0)
    tl.store(out_ptr + ((b * H + h) * L + pos) * D + d, x, mask=d < D)


def kv_gather_paged(pool: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The dense cache `[B, H, length, D]` the block table describes (zeros where a block is unallocated)."""
    _, h, p, d = pool.shape
    b = block_table.shape[0]
    out = torch.empty((b, h, int(length), d), dtype=pool.dtype, device=pool.device)
    if b * h * length:
        _kv_gather_paged_kernel[(b * int(length), h)](
            pool, block_table, out, int(length), h, p, d, pool.stride(0), pool.stride(1), pool.stride(2),
            block_table.stride(0), BLOCK_D=triton.next_power_of_2(d),
        )
    return out


@triton.jit
def _kv_copy_blocks_kernel(pool_ptr, src_ptr, dst_ptr, block_numel, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    s = tl.load(src_ptr + i)
    t = tl.load(dst_ptr + i)
    x = tl.load(pool_ptr + s * block_numel + offs, mask=offs < block_numel)
    tl.store(pool_ptr + t * block_numel + offs, x, mask=offs < block_numel)


def kv_copy_blocks(pool: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    """`pool[dst[i]] = pool[src[i]]` in place for a contiguous pool (dst blocks are never sources)."""
    n = src.numel()
    numel = pool[0].numel() if pool.shape[0] else 0
    if n and numel:
        block = max(16, min(triton.next_power_of_2(numel), 4096))
        _kv_copy_blocks_kernel[(n, triton.cdiv(numel, block))](pool, src, dst, numel, BLOCK=block)
