"""KV-cache ops: every impl against the reference; a paged beam search equals the dense one exactly."""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import kv_cache as ref
from tests.helpers import has, to_numpy

pytestmark = pytest.mark.skipif(not has("torch"), reason="torch not installed")
LABELS = ["cpp", "native"]


def ops_for(label: str):
    from pyengine.backends.torch.backend import OPS

    class Ops:
        pass

    ops = Ops()
    for name in ("kv_append", "kv_reorder", "kv_append_paged", "kv_gather_paged", "kv_copy_blocks", "kv_block_prepare"):
        fns = {i.label: i.fn for i in OPS[name]}
        if label not in fns:
            pytest.skip(f"no {label} impl of {name}")
        setattr(ops, name, fns[label])
    return ops


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("label", LABELS)
def test_dense_append_and_reorder(label, rng):
    ops = ops_for(label)
    cache = rng.standard_normal((3, 2, 10, 4)).astype(np.float32)
    new = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    index = np.array([2, 2, 0])
    got = _t(cache.copy())
    ops.kv_append(got, _t(new), 4)
    ops.kv_reorder(got, _t(index))
    want = cache.copy()
    ref.kv_append(want, new, 4)
    ref.kv_reorder(want, index)
    np.testing.assert_array_equal(to_numpy(got), want)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("block", [1, 4, 16])
def test_paged_beam_search_equals_dense(label, block, rng):
    """12 beam steps with random parents: the paged cache read through its table equals the dense cache."""
    import torch

    ops = ops_for(label)
    b, h, d, steps, prompt = 4, 2, 8, 12, 5
    num_blocks = b * (-(-(prompt + steps) // block) + 2)
    pool = torch.zeros(num_blocks, h, block, d, dtype=torch.bfloat16)
    table = torch.full((b, 8 + (prompt + steps) // block), -1, dtype=torch.long)
    dense = torch.zeros(b, h, prompt + steps, d, dtype=torch.bfloat16)
    new = torch.from_numpy(rng.standard_normal((b, h, prompt, d)).astype(np.float32)).bfloat16()
    table, src, dst = ops.kv_block_prepare(table, torch.arange(b), 0, prompt, block, num_blocks)
    ops.kv_append_paged(pool, table, new, 0)
    ops.kv_append(dense, new, 0)
    length = prompt
    for _ in range(steps):
        index = torch.from_numpy(rng.integers(0, b, b))
        want_table = ref.kv_block_prepare(table.numpy(), index.numpy(), length, 1, block, num_blocks)
        table, src, dst = ops.kv_block_prepare(table, index, length, 1, block, num_blocks)
        for got_part, want_part in zip((table, src, dst), want_table):
            np.testing.assert_array_equal(to_numpy(got_part), want_part)
        assert len(src) <= b  # copy-on-write touches at most one tail block per row
        ops.kv_copy_blocks(pool, src, dst)
        ops.kv_reorder(dense, index)
        step_kv = torch.from_numpy(rng.standard_normal((b, h, 1, d)).astype(np.float32)).bfloat16()
        ops.kv_append_paged(pool, table, step_kv, length)
        ops.kv_append(dense, step_kv, length)
        length += 1
        assert torch.equal(ops.kv_gather_paged(pool, table, length), dense[:, :, :length])


def test_cpp_kv_errors():
    import torch

    from pyengine.backends.torch import _C, cpp

    if _C.available() is not None:
        pytest.skip(_C.available())
    cache = torch.zeros(2, 2, 4, 3)
    with pytest.raises(RuntimeError, match="do not fit"):
        cpp.kv_append(cache, torch.zeros(2, 2, 2, 3), 3)
    with pytest.raises(RuntimeError, match="dtype"):
        cpp.kv_append(cache, torch.zeros(2, 2, 1, 3, dtype=torch.float16), 0)
    with pytest.raises(RuntimeError, match="out of range"):
        cpp.kv_reorder(cache, torch.tensor([0, 5]))
    with pytest.raises(RuntimeError, match="not a block"):
        cpp.kv_append_paged(torch.zeros(2, 2, 4, 3), torch.tensor([[0], [9]]), torch.zeros(2, 2, 1, 3), 0)
    with pytest.raises(RuntimeError, match="exhausted"):
        cpp.kv_block_prepare(torch.full((4, 2), -1), torch.arange(4), 0, 1, 4, 2)
