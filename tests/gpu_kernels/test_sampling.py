"""Triton fused sampling / argmax against the NumPy reference (`pyengine.ops.fused`), under the interpreter.

The draw must equal the reference's for the same seeds and steps; a different id is accepted only where the
reference CDF passes within 1e-6 of u (float32 exp and summation order; STYLE.md section 6), and the test
says so. Shapes are small: the interpreter runs every program in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import fused as ref
from pyengine.ops import random as ref_random
from pyengine.ops import sampling as ref_sampling

NEAR = 1e-6


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def _params(b: int, rng) -> dict:
    return dict(
        penalty=rng.choice([1.0, 1.3, 0.8], b),
        min_len=rng.choice([0, 10**6], b),
        temperature=rng.choice([1.0, 0.7, 1.5], b),
        top_k=rng.choice([0, 1, 5, 50], b),
        top_p=rng.choice([1.0, 0.9, 0.5, 0.0], b),
        min_p=rng.choice([0.0, 0.05], b),
        seed=rng.integers(-(2**40), 2**40, b),
        step=rng.integers(0, 1000, b),
    )


def _cdf_distance(scores, tokens, params, eos, banned, row) -> float:
    """min |CDF_ref - u| over the row's reference distribution (a genuine near-tie when < NEAR)."""
    lens = [tokens.shape[1]] * scores.shape[0]
    x = ref.processed_row(scores, tokens, row, lens, params["penalty"], params["min_len"], eos, banned)
    if not np.isfinite(x).any():
        return 1.0
    x = x / params["temperature"][row]
    if params["top_k"][row] > 0:
        x = ref_sampling.top_k_mask(x, int(params["top_k"][row]))
    if params["top_p"][row] < 1:
        x = ref_sampling.top_p_mask(x, float(params["top_p"][row]))
    if params["min_p"][row] > 0:
        x = ref_sampling.min_p_mask(x, float(params["min_p"][row]))
    cdf = np.cumsum(ref_sampling._softmax(x[0]))
    u = ref_random.uniform(int(params["seed"][row]), int(params["step"][row]))
    return float(np.abs(cdf / cdf[-1] - u).min())


def _assert_draws(got, want, s, tokens, params, eos, banned):
    for row in range(len(want)):
        if got[row] != want[row]:
            dist = _cdf_distance(s, tokens, params, eos, banned, row)
            assert dist < NEAR, f"row {row}: id {got[row]} != {want[row]} although the CDF is {dist:.2e} from u"


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("vocab", [7, 111, 1000])
def test_fused_sample_draws_the_reference_token(batch, vocab, rng):
    from pyengine.backends.torch import triton

    for _ in range(2):
        s = (rng.standard_normal((batch, vocab)) * 3).astype(np.float32)
        tokens = rng.integers(0, vocab, (batch, 6))
        eos, banned = [vocab - 1], [0, vocab // 2]
        params = _params(batch, rng)
        want = ref.fused_sample(s, tokens, None, eos_token_ids=eos, banned_ids=banned, **params)
        got = triton.fused_sample(_t(s), _t(tokens), None, eos_token_ids=eos, banned_ids=banned, **params).numpy()
        _assert_draws(got, want, s, tokens, params, eos, banned)


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.5, 1.0])
def test_fused_sample_edge_rows(top_p, rng):
    """-inf rows draw 0; all-equal rows (ties at every threshold) and a lone finite token; top_p 0 and 1."""
    from pyengine.backends.torch import triton

    v = 111
    s = np.full((6, v), -np.inf, np.float32)
    s[1, 40] = 2.0                       # one finite token
    s[2] = 0.5                           # all equal
    s[3] = rng.standard_normal(v)
    s[3, ::2] = -np.inf                  # half banned
    s[4] = np.repeat(rng.standard_normal(v // 3 + 1), 3)[:v]  # triple ties everywhere
    s[5] = -0.0                          # signed zeros are ties
    s[5, ::3] = 0.0
    tokens = np.zeros((6, 1), np.int64)
    for top_k in (0, 3):
        params = dict(penalty=np.ones(6), min_len=np.zeros(6, np.int64), temperature=np.full(6, 0.9),
                      top_k=np.full(6, top_k), top_p=np.full(6, top_p), min_p=np.zeros(6),
                      seed=np.arange(6) * 7919, step=np.full(6, 3))
        want = ref.fused_sample(s, tokens, **params)
        got = triton.fused_sample(_t(s), _t(tokens), **params).numpy()
        _assert_draws(got, want, s, tokens, params, (), ())
        assert got[0] == 0 and got[1] == 40


def test_fused_sample_min_tokens_to_keep(rng):
    from pyengine.backends.torch import triton

    s = (rng.standard_normal((3, 111)) * 2).astype(np.float32)
    s[2] = 1.0
    tokens = np.zeros((3, 1), np.int64)
    for top_p in (0.0, 0.2):
        kw = dict(top_k=np.array([0, 2, 0]), top_p=top_p, seed=np.array([1, 2, 3]), step=5, min_tokens_to_keep=4)
        np.testing.assert_array_equal(triton.fused_sample(_t(s), _t(tokens), **kw).numpy(), ref.fused_sample(s, tokens, **kw))


def test_fused_sample_same_tokens_alone_and_in_a_batch(rng):
    from pyengine.backends.torch import triton

    s = (rng.standard_normal((3, 300)) * 2).astype(np.float32)
    tokens = rng.integers(0, 300, (3, 5))
    params = _params(3, rng)
    batch = triton.fused_sample(_t(s), _t(tokens), **params).numpy()
    alone = triton.fused_sample(_t(s[2:]), _t(tokens[2:]), **{k: v[2:] for k, v in params.items()}).numpy()
    assert alone[0] == batch[2]


def test_fused_sample_bfloat16_scores(rng):
    import torch

    from pyengine.backends.torch import triton

    s = torch.from_numpy((rng.standard_normal((3, 111)) * 3).astype(np.float32)).to(torch.bfloat16)
    tokens = np.zeros((3, 1), np.int64)
    params = dict(top_k=np.array([0, 5, 20]), top_p=np.array([0.9, 1.0, 0.6]), temperature=0.8, seed=np.arange(3), step=1)
    want = ref.fused_sample(s.float().numpy(), tokens, **params)
    np.testing.assert_array_equal(triton.fused_sample(s, _t(tokens), **params).numpy(), want)


def test_fused_sample_bad_parameters_raise():
    import torch

    from pyengine.backends.torch import triton

    s, tok = torch.zeros(2, 10), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        triton.fused_sample(s, tok, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        triton.fused_sample(s, tok, top_p=[0.5, 2.0])
    with pytest.raises(ValueError, match="cur_len"):
        triton.fused_sample(s, tok, cur_len=5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        triton.fused_sample(s, tok, banned_ids=[10])
    with pytest.raises(ValueError, match=r"\[batch, vocab\]"):
        triton.fused_sample(s[0], tok)


@pytest.mark.parametrize("vocab", [7, 111, 1000])
def test_argmax_and_fused_argmax_exact(vocab, rng):
    from pyengine.backends.torch import triton

    b = 3
    s = (rng.standard_normal((b, vocab)) * 3).astype(np.float32)
    s[1] = -np.inf
    s[2, : vocab // 2] = s[2].max()  # ties go to the lowest id
    np.testing.assert_array_equal(triton.argmax(_t(s)).numpy(), ref_sampling.argmax(s))
    tokens = rng.integers(0, vocab, (b, 8))
    tokens[:, -1] = np.argmax(s, axis=-1)
    kw = dict(penalty=np.array([1.0, 3.0, 2.0]), min_len=np.array([0, 100, 100]), eos_token_ids=[1], banned_ids=[2])
    np.testing.assert_array_equal(triton.fused_argmax(_t(s), _t(tokens), None, **kw).numpy(), ref.fused_argmax(s, tokens, None, **kw))
