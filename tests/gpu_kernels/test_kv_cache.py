"""Triton KV-cache copies vs `pyengine.ops.kv_cache`: contents exact."""

from __future__ import annotations

import numpy as np

from pyengine.ops import kv_cache as ref


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def test_kv_append_and_reorder(rng):
    from pyengine.backends.torch import triton

    cache = rng.standard_normal((3, 2, 10, 5)).astype(np.float32)
    values = rng.standard_normal((3, 2, 3, 5)).astype(np.float32)
    want = cache.copy()
    ref.kv_append(want, values, 4)
    got = _t(cache.copy())
    triton.kv_append(got, _t(values), 4)
    np.testing.assert_array_equal(got.numpy(), want)
    index = np.array([2, 0, 0])
    ref.kv_reorder(want, index)
    triton.kv_reorder(got, _t(index))
    np.testing.assert_array_equal(got.numpy(), want)


def test_paged_append_gather_copy(rng):
    from pyengine.backends.torch import triton

    n_blocks, h, p, d, b = 9, 2, 4, 3, 2
    pool = rng.standard_normal((n_blocks, h, p, d)).astype(np.float32)
    table = np.array([[3, 0, -1], [5, 7, 1]], np.int64)
    values = rng.standard_normal((b, h, 3, d)).astype(np.float32)
    want = pool.copy()
    ref.kv_append_paged(want, table, values, 3)  # positions 3..5 cross a block boundary
    got = _t(pool.copy())
    triton.kv_append_paged(got, _t(table), _t(values), 3)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(triton.kv_gather_paged(got, _t(table), 6).numpy(), ref.kv_gather_paged(want, table, 6))
    src, dst = np.array([3, 5]), np.array([8, 2])
    ref.kv_copy_blocks(want, src, dst)
    triton.kv_copy_blocks(got, _t(src), _t(dst))
    np.testing.assert_array_equal(got.numpy(), want)


def test_paged_beam_step_through_block_prepare(rng):
    """One beam step: prepare (cpp/native), then copy + append with the Triton kernels."""
    from pyengine.backends.torch import native, triton

    n_blocks, h, p, d = 12, 1, 2, 2
    pool = rng.standard_normal((n_blocks, h, p, d)).astype(np.float32)
    table = np.array([[0, 1, -1, -1], [2, 3, -1, -1], [4, 5, -1, -1]], np.int64)
    index = np.array([1, 1, 0])
    want_table, src, dst = ref.kv_block_prepare(table, index, 3, 1, p, n_blocks)
    t_table, t_src, t_dst = native.kv_block_prepare(_t(table), _t(index), 3, 1, p, n_blocks)
    np.testing.assert_array_equal(t_table.numpy(), want_table)
    values = rng.standard_normal((3, h, 1, d)).astype(np.float32)
    want = pool.copy()
    ref.kv_copy_blocks(want, src, dst)
    ref.kv_append_paged(want, want_table, values, 3)
    got = _t(pool.copy())
    triton.kv_copy_blocks(got, t_src, t_dst)
    triton.kv_append_paged(got, t_table, _t(values), 3)
    np.testing.assert_array_equal(got.numpy(), want)
