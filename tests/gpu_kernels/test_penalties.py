"""Triton repetition penalty, min-length and bad-words bans, no-repeat-n-gram blocking vs `pyengine.ops.logits`."""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import logits as ref
from tests.tolerances import TOLERANCES


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("shape", [(1, 7), (3, 111), (3, 1000)])
@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty(shape, penalty, rng):
    from pyengine.backends.torch import triton

    b, v = shape
    s = (rng.standard_normal(shape) * 3).astype(np.float32)
    s[0, 0] = 0.0
    tokens = rng.integers(0, v, (b, 9))
    tokens[:, 1] = tokens[:, 0]  # repeats do not compound
    got = triton.repetition_penalty(_t(s), _t(tokens), penalty).numpy()
    atol, rtol = TOLERANCES["float32"]
    np.testing.assert_allclose(got, ref.repetition_penalty(s, tokens, np.float32(penalty)), atol=atol, rtol=rtol)


def test_min_length_bans_eos_until_reached(rng):
    from pyengine.backends.torch import triton

    s = rng.standard_normal((3, 111)).astype(np.float32)
    tokens = rng.integers(0, 111, (3, 4))
    for min_len in (2, 10):
        got = triton.min_length(_t(s), _t(tokens), min_len, [5, 110]).numpy()
        np.testing.assert_array_equal(got, ref.min_length(s, tokens, min_len, [5, 110]))


def test_bad_words(rng):
    from pyengine.backends.torch import triton

    v = 111
    s = rng.standard_normal((3, v)).astype(np.float32)
    tokens = rng.integers(0, v, (3, 6))
    words = [[7], [int(tokens[0, -1]), 9], [int(tokens[1, -2]), int(tokens[1, -1]), 11], list(range(1, 9)), [3, 4]]
    got = triton.bad_words(_t(s), _t(tokens), words).numpy()
    np.testing.assert_array_equal(got, ref.bad_words(s, tokens, words))
    with pytest.raises(ValueError, match="at least one token"):
        triton.bad_words(_t(s), _t(tokens), [[]])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [2, 40])
def test_no_repeat_ngram(n, length, rng):
    from pyengine.backends.torch import triton

    v = 111
    s = rng.standard_normal((3, v)).astype(np.float32)
    tokens = rng.integers(0, 6, (3, length))  # a small alphabet: many repeats
    got = triton.no_repeat_ngram(_t(s), _t(tokens), n).numpy()
    np.testing.assert_array_equal(got, ref.no_repeat_ngram(s, tokens, n))


def test_processors_leave_their_input_untouched(rng):
    from pyengine.backends.torch import triton

    s = rng.standard_normal((3, 111)).astype(np.float32)
    x = _t(s.copy())
    tokens = _t(rng.integers(0, 4, (3, 12)))
    triton.repetition_penalty(x, tokens, 1.5)
    triton.no_repeat_ngram(x, tokens, 2)
    triton.bad_words(x, tokens, [[1], [2, 3]])
    triton.min_length(x, tokens, 50, [0])
    np.testing.assert_array_equal(x.numpy(), s)
