"""The incremental n-gram table: every impl's ngram_ban equals the stateless no_repeat_ngram reference.

Tables share one layout (`pyengine.ops.ngram`), so a table built by one impl must serve another.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import logits as ref_logits
from pyengine.ops import ngram as ref
from tests.helpers import has, to_numpy

pytestmark = pytest.mark.skipif(not has("torch"), reason="torch not installed")


def impl_triples() -> list:
    if not has("torch"):
        return []
    from pyengine.backends.torch.backend import OPS

    fns = {op: {i.label: i.fn for i in OPS[op]} for op in ("ngram_table_init", "ngram_table_add", "ngram_ban")}
    return [
        pytest.param(fns["ngram_table_init"][lab], fns["ngram_table_add"][lab], fns["ngram_ban"][lab], id=lab)
        for lab in fns["ngram_ban"]
    ]


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("init,add,ban", impl_triples())
def test_incremental_ban_equals_stateless_reference(init, add, ban, n, rng):
    """Decode 40 steps over a tiny vocabulary (many repeats), growing the table one token at a time."""
    b, v, max_len = 3, 6, 48
    history = rng.integers(0, v, (b, 5))
    table = init(b, max_len)
    for _ in range(40):
        s = rng.standard_normal((b, v)).astype(np.float32)
        add(table, _t(history), n)
        got = to_numpy(ban(_t(s), table, _t(history), n))
        np.testing.assert_array_equal(got, ref_logits.no_repeat_ngram(s, history, n))
        history = np.concatenate([history, rng.integers(0, v, (b, 1))], axis=1)


@pytest.mark.parametrize("init,add,ban", impl_triples())
def test_table_layout_is_shared_with_the_reference(init, add, ban, rng):
    history = rng.integers(0, 50, (2, 30))
    table = init(2, 64)
    add(table, _t(history), 3)
    want = ref.ngram_table_add(ref.ngram_table_init(2, 64), history, 3)
    np.testing.assert_array_equal(to_numpy(table), want)
    s = rng.standard_normal((2, 50)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(ban(_t(s), _t(want), _t(history), 3)), ref.ngram_ban(s, want, history, 3))


@pytest.mark.parametrize("init,add,ban", impl_triples())
def test_long_repetitive_history(init, add, ban, rng):
    """One token repeated: a single prefix with one continuation; dedup keeps the probe chain at one entry."""
    history = np.full((2, 1500), 7, np.int64)
    history[1, ::3] = 9
    table = init(2, 1600)
    add(table, _t(history), 2)
    s = np.zeros((2, 20), np.float32)
    np.testing.assert_array_equal(to_numpy(ban(_t(s), table, _t(history), 2)), ref_logits.no_repeat_ngram(s, history, 2))
    assert int((to_numpy(table)[0, 2::2] != 0).sum()) == 1


def test_cpp_table_errors():
    import torch

    from pyengine.backends.torch import _C, cpp

    if _C.available() is not None:
        pytest.skip(_C.available())
    table = cpp.ngram_table_init(1, 8)
    with pytest.raises(RuntimeError, match="capacity"):
        cpp.ngram_table_add(table, torch.zeros(1, 200, dtype=torch.long), 2)
    cpp.ngram_table_add(table, torch.zeros(1, 8, dtype=torch.long), 2)
    with pytest.raises(RuntimeError, match="one generation"):
        cpp.ngram_table_add(table, torch.zeros(1, 3, dtype=torch.long), 2)
    with pytest.raises(RuntimeError, match="power of two"):
        cpp.ngram_ban(torch.zeros(1, 5), torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 2)
