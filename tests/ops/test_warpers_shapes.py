"""The warpers and argmax on real vocabulary sizes, edge rows and bad input, for every registered impl.

Shapes: batch {1, 3, 33} x vocab {7, 111, 32000, 49152, 50257, 128256}, subsampled so tests/ops stays
fast on two cores. Edge rows: all -inf, half -inf, all equal, heavy ties.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import sampling as ref
from tests.helpers import has, to_numpy, torch_impls

pytestmark = [
    pytest.mark.skipif(not has("torch"), reason="torch not installed"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),  # reference on all -inf rows
]

SHAPES = [(1, 7), (3, 111), (33, 7), (1, 32000), (3, 49152), (3, 50257), (1, 128256), (33, 32000)]


def impls(op: str) -> list:
    return torch_impls(op)


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def edge_scores(shape, rng) -> np.ndarray:
    """Normal scores with edge rows: all -inf, half -inf, all equal, rounded (ties)."""
    b, v = shape
    s = (rng.standard_normal((b, v)) * 3).astype(np.float32)
    if b >= 3:
        s[0, : v // 2] = -np.inf
        s[1] = 0.25
        s[2] = np.round(s[2])
    if b >= 33:
        s[3] = -np.inf
    return s


def assert_same_kept(got: np.ndarray, want: np.ndarray, s: np.ndarray, allowance: int) -> None:
    """Kept values equal, largest first; counts may differ by `allowance` tokens (near-ties at a boundary)."""
    for row in range(s.shape[0]):
        kept_got = np.sort(s[row][~np.isinf(got[row])])[::-1]
        kept_want = np.sort(s[row][~np.isinf(want[row])])[::-1]
        n = min(len(kept_got), len(kept_want))
        assert abs(len(kept_got) - len(kept_want)) <= allowance, (
            f"row {row}: kept {len(kept_got)} vs reference {len(kept_want)}, beyond the {allowance}-token "
            "near-tie allowance"
        )
        np.testing.assert_array_equal(kept_got[:n], kept_want[:n])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls("top_k_mask"))
@pytest.mark.parametrize("k", [1, 50, 1000])
def test_top_k_mask_shapes(fn, shape, k, rng):
    s = edge_scores(shape, rng)
    want = ref.top_k_mask(s, k)
    got = to_numpy(fn(_t(s), k))
    np.testing.assert_array_equal(got, want)  # exact: a selection, no arithmetic


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls("top_p_mask"))
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9, 1.0])
def test_top_p_mask_shapes(fn, shape, p, rng):
    s = edge_scores(shape, rng)
    want = ref.top_p_mask(s, p)
    got = to_numpy(fn(_t(s), p))
    # float32 softmax/cumsum (native) or float64 sums in another order (cpp) vs the float64 reference:
    # one token either way at a near-tie of the cumulative mass with 1 - top_p.
    assert_same_kept(got, want, s, allowance=1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", impls("min_p_mask"))
@pytest.mark.parametrize("p", [0.0, 0.1, 1.0])
def test_min_p_mask_shapes(fn, shape, p, rng):
    s = edge_scores(shape, rng)
    want = np.isinf(ref.min_p_mask(s, p))
    got = np.isinf(to_numpy(fn(_t(s), p)))
    assert int((got != want).sum()) <= shape[0], "min-p masks may differ only at exact-threshold near-ties"


@pytest.mark.parametrize("fn", impls("top_p_mask"))
@pytest.mark.parametrize("keep", [1, 3, 20])
def test_top_p_min_tokens_to_keep_and_filter_value(fn, keep, rng):
    """With top_p = 0 only min_tokens_to_keep survive; removed tokens take filter_value, not -inf."""
    s = edge_scores((3, 111), rng)
    want = ref.top_p_mask(s, 0.0, filter_value=-7.0, min_tokens_to_keep=keep)
    got = to_numpy(fn(_t(s), 0.0, -7.0, keep))
    for row in range(3):
        assert sorted(got[row][got[row] != -7.0]) == sorted(want[row][want[row] != -7.0])


@pytest.mark.parametrize("fn", impls("min_p_mask"))
def test_min_p_min_tokens_to_keep(fn, rng):
    s = edge_scores((3, 111), rng)
    s[2, 5] = 100.0  # one dominant token: min-p alone would keep only it
    want = ref.min_p_mask(s, 0.5, min_tokens_to_keep=4)
    got = to_numpy(fn(_t(s), 0.5, -float("inf"), 4))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("shape", [(1, 7), (33, 50257), (3, 128256)])
@pytest.mark.parametrize("fn", impls("argmax"))
def test_argmax_shapes(fn, shape, rng):
    s = edge_scores(shape, rng)
    np.testing.assert_array_equal(to_numpy(fn(_t(s))), ref.argmax(s))


@pytest.mark.parametrize("fn", impls("argmax"))
def test_argmax_nan_wins_like_torch(fn):
    s = np.array([[1.0, np.nan, 3.0, np.nan]], np.float32)
    assert to_numpy(fn(_t(s))).tolist() == [1]


@pytest.mark.parametrize("fn", impls("top_k_mask"))
def test_top_k_ascending_row_worst_case(fn):
    """An ascending row makes every element beat the running threshold of a streaming selection."""
    s = np.arange(50257, dtype=np.float32)[None].repeat(2, 0)
    np.testing.assert_array_equal(to_numpy(fn(_t(s), 50)), ref.top_k_mask(s, 50))


def test_cpp_rejects_bad_input_with_a_clear_error():
    import torch

    from pyengine.backends.torch import _C, cpp

    if _C.available() is not None:
        pytest.skip(_C.available())
    s = torch.zeros(2, 10)
    with pytest.raises(RuntimeError, match="out of range"):
        cpp.repetition_penalty(s, torch.tensor([[1, 10], [0, 0]]), 1.2)
    with pytest.raises(RuntimeError, match="out of range"):
        cpp.bad_words(s, torch.zeros(2, 3, dtype=torch.long), [[-1]])
    with pytest.raises(RuntimeError, match="int64"):
        cpp.no_repeat_ngram(s, torch.zeros(2, 3, dtype=torch.int32), 2)
    with pytest.raises(RuntimeError, match=r"\[B, V\]"):
        cpp.top_k_mask(torch.zeros(10), 3)
    with pytest.raises(RuntimeError, match="float32"):
        cpp.argmax(torch.zeros(2, 10, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="top_p"):
        cpp.top_p_mask(s, 1.5)
    with pytest.raises(RuntimeError, match="tokens must be"):
        cpp.repetition_penalty(s, torch.zeros(3, 2, dtype=torch.long), 1.2)


def test_cpp_delegates_other_float_dtypes_to_native():
    import torch

    from pyengine.backends.torch import cpp, native

    s = torch.randn(3, 50, dtype=torch.float64)
    assert torch.equal(cpp.top_k_mask(s, 5), native.top_k_mask(s, 5))
    assert cpp.temperature(s.half(), 0.5).dtype == torch.float16


def test_cpp_accepts_a_column_slice_of_the_token_buffer(rng):
    """The engine passes tokens[:, :cur] (row stride > T): kernels must honour the stride."""
    import torch

    from pyengine.backends.torch import cpp, native

    buf = torch.from_numpy(rng.integers(0, 100, size=(4, 40)))
    s = torch.from_numpy(rng.standard_normal((4, 100)).astype(np.float32))
    hist = buf[:, :17]
    assert torch.equal(cpp.repetition_penalty(s, hist, 1.5), native.repetition_penalty(s, hist, 1.5))
    assert torch.equal(cpp.no_repeat_ngram(s, hist, 2), native.no_repeat_ngram(s, hist, 2))
