"""sample_from_scores: every torch impl draws what torch.multinomial(softmax(scores)) draws, and leaves the
generator exactly where torch leaves it (the same later numbers), for the global generator and an explicit
one, at any position of the Mersenne Twister stream (pairs straddling a twisted block included).

The cpp impl re-walks torch's generator instead of filling a [B, V] tensor of exponentials, so the tests
compare it with the native impl (torch itself) token for token and state for state.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.helpers import has, torch_impls

pytestmark = pytest.mark.skipif(not has("torch"), reason="torch not installed")


def _native():
    from pyengine.backends.torch import native

    return native.sample_from_scores


def _draw(impl, scores, skip: int, generator_seed: int | None):
    """(tokens, generator state after, the next three uniforms) for impl on a generator advanced `skip` words."""
    import torch

    if generator_seed is None:
        torch.manual_seed(1234)
        gen = None
    else:
        gen = torch.Generator().manual_seed(generator_seed)
    torch.rand(skip, generator=gen)  # float32 uniforms take one 32-bit word each
    tokens = impl(scores, gen)
    state = (gen or torch.default_generator).get_state()
    return tokens, state, torch.rand(3, generator=gen)


def _assert_same_as_torch(impl, scores, skip=0, generator_seed=None):
    import torch

    want = _draw(_native(), scores, skip, generator_seed)
    got = _draw(impl, scores, skip, generator_seed)
    assert torch.equal(got[0], want[0]), (got[0], want[0])
    assert torch.equal(got[1], want[1]), "the generator state after the draw differs from torch's"
    assert torch.equal(got[2], want[2])


def _masked(scores, keep: int):
    """Scores with all but the `keep` best of each row at -inf (a top-k before the draw)."""
    import torch

    kth = torch.topk(scores, keep, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, -float("inf"))


@pytest.mark.parametrize("impl", torch_impls("sample_from_scores"))
@pytest.mark.parametrize("shape", [(1, 7), (3, 111), (33, 32000), (4, 49152), (2, 50257), (1, 128256)])
def test_same_tokens_and_state_as_torch(impl, shape):
    import torch

    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    scores = torch.from_numpy((rng.standard_normal(shape) * 3).astype(np.float32))
    for keep in (1, 5, 50):  # sparse rows: the cpp walk; dense rows: torch's own loop
        _assert_same_as_torch(impl, _masked(scores, min(keep, shape[1])), skip=keep)
    _assert_same_as_torch(impl, scores, skip=1)


@pytest.mark.parametrize("impl", torch_impls("sample_from_scores"))
@pytest.mark.parametrize("skip", [0, 1, 2, 623, 624, 625, 1247, 5000])
def test_any_stream_position_and_explicit_generator(impl, skip):
    """Odd skips make every pair straddle the 624-word blocks differently; explicit generators are walked too."""
    import torch

    scores = _masked(torch.randn(5, 3001) * 2, 40)
    _assert_same_as_torch(impl, scores, skip=skip)
    _assert_same_as_torch(impl, scores, skip=skip, generator_seed=99)


@pytest.mark.parametrize("impl", torch_impls("sample_from_scores"))
def test_all_zero_words_give_torchs_nan_pick(impl):
    """A pair of raw words that are both 0 gives u = 0, q = 0 and p / q = NaN even where p = 0: torch.argmax
    picks it. Craft a generator whose next words are zeros (the untwisted tail of the state is returned
    as is) and check the impl picks the same token torch does."""
    import torch

    def crafted():
        gen = torch.Generator().manual_seed(5)
        raw = bytearray(gen.get_state().numpy().tobytes())
        left, nxt = 600, 20  # 599 words before the next twist, starting at state[20]
        struct.pack_into("<i", raw, 8, left)
        struct.pack_into("<Q", raw, 16, nxt)
        for w in (nxt + 6, nxt + 7):  # pair 3 (token 3 of row 0): both words 0
            struct.pack_into("<Q", raw, 24 + 8 * w, 0)
        gen.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())
        return gen

    scores = torch.full((2, 50), -float("inf"))
    scores[:, 10:12] = 0.0  # token 3 has p = 0: only the NaN can pick it
    want = _native()(scores, crafted())
    got_gen = crafted()
    got = impl(scores, got_gen)
    assert int(want[0]) == 3, "torch itself should pick the NaN token; the crafted state is wrong"
    assert torch.equal(got, want)


@pytest.mark.parametrize("impl", torch_impls("sample_from_scores"))
def test_bad_probabilities_raise_torchs_errors(impl):
    import torch

    with pytest.raises(RuntimeError, match="probability tensor contains either"):
        impl(torch.tensor([[0.0, float("nan")]]), None)
    with pytest.raises(RuntimeError, match="probability tensor contains either"):
        impl(torch.full((1, 4), -float("inf")), None)  # softmax of an all -inf row is NaN


def test_other_dtypes_take_the_native_draw():
    import torch

    from pyengine.backends.torch import _C, cpp

    if _C.available() is not None:
        pytest.skip(_C.available())
    scores = _masked(torch.randn(3, 500, dtype=torch.float64), 10)
    _assert_same_as_torch(cpp.sample_from_scores, scores, skip=3)
