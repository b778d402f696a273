"""GPU lane: the Triton and CUDA kernels on CUDA tensors against the NumPy reference, at real vocabularies.

Same policy as tests/gpu_kernels (exact ids / masks / caches, tolerance table for floats, draws equal to the
reference's unless u is within 1e-6 of a CDF value), plus what the interpreter cannot show: strided caches,
bf16 logits at vocab 131072, and the automatic choice on CUDA tensors.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.ops import fused as ref
from pyengine.ops import kv_cache as ref_kv
from pyengine.ops import logits as ref_logits
from pyengine.ops import random as ref_random
from pyengine.ops import sampling as ref_sampling
from tests.tolerances import TOLERANCES

NEAR = 1e-6


def _cuda(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def _impls():
    from pyengine.backends.torch import cuda, triton

    out = [pytest.param(triton, id="triton")]
    if cuda.available() is None:
        out.append(pytest.param(cuda, id="cuda"))
    return out


def _params(b: int, rng) -> dict:
    return dict(
        penalty=rng.choice([1.0, 1.3], b), min_len=rng.choice([0, 10**6], b), temperature=rng.choice([1.0, 0.7], b),
        top_k=rng.choice([0, 1, 50], b), top_p=rng.choice([1.0, 0.9, 0.0], b), min_p=rng.choice([0.0, 0.05], b),
        seed=rng.integers(-(2**40), 2**40, b), step=rng.integers(0, 1000, b),
    )


def _cdf_distance(s, tokens, params, eos, banned, row) -> float:
    lens = [tokens.shape[1]] * s.shape[0]
    x = ref.processed_row(s, tokens, row, lens, params["penalty"], params["min_len"], eos, banned)
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


@pytest.mark.parametrize("shape", [(1, 7), (3, 111), (33, 50257), (4, 131072)])
@pytest.mark.parametrize("impl", _impls())
def test_fused_sample_matches_reference(impl, shape, rng):
    b, v = shape
    s = (rng.standard_normal(shape) * 3).astype(np.float32)
    tokens = rng.integers(0, v, (b, 12))
    eos, banned = [v - 1], [0, v // 2]
    params = _params(b, rng)
    want = ref.fused_sample(s, tokens, None, eos_token_ids=eos, banned_ids=banned, **params)
    got = impl.fused_sample(_cuda(s), _cuda(tokens), None, eos_token_ids=eos, banned_ids=banned, **params).cpu().numpy()
    for row in range(b):
        if got[row] != want[row]:
            dist = _cdf_distance(s, tokens, params, eos, banned, row)
            assert dist < NEAR, f"row {row}: id {got[row]} != {want[row]} although the CDF is {dist:.2e} from u"


@pytest.mark.parametrize("impl", _impls())
def test_fused_sample_bf16_and_edge_rows(impl, rng):
    import torch

    s = np.full((4, 50257), -np.inf, np.float32)
    s[1, 7] = 1.0
    s[2] = 0.25
    s[3] = rng.standard_normal(50257)
    tokens = np.zeros((4, 1), np.int64)
    kw = dict(top_k=np.array([0, 0, 5, 40]), top_p=np.array([1.0, 0.0, 0.5, 0.9]), seed=np.arange(4), step=2)
    want = ref.fused_sample(s, tokens, **kw)
    assert impl.fused_sample(_cuda(s), _cuda(tokens), **kw).cpu().tolist() == want.tolist()
    sb = torch.from_numpy(s).to(torch.bfloat16)
    want_b = ref.fused_sample(sb.float().numpy(), tokens, **kw)
    assert impl.fused_sample(sb.cuda(), _cuda(tokens), **kw).cpu().tolist() == want_b.tolist()


def test_triton_processors_argmax_and_bans(rng):
    from pyengine.backends.torch import triton

    b, v = 5, 32000
    s = (rng.standard_normal((b, v)) * 3).astype(np.float32)
    tokens = rng.integers(0, 50, (b, 300))
    atol, rtol = TOLERANCES["float32"]
    np.testing.assert_allclose(triton.repetition_penalty(_cuda(s), _cuda(tokens), 1.3).cpu().numpy(),
                               ref_logits.repetition_penalty(s, tokens, np.float32(1.3)), atol=atol, rtol=rtol)
    np.testing.assert_array_equal(triton.no_repeat_ngram(_cuda(s), _cuda(tokens), 3).cpu().numpy(),
                                  ref_logits.no_repeat_ngram(s, tokens, 3))
    words = [[5], [int(tokens[0, -1]), 9], [1, 2, 3]]
    np.testing.assert_array_equal(triton.bad_words(_cuda(s), _cuda(tokens), words).cpu().numpy(),
                                  ref_logits.bad_words(s, tokens, words))
    np.testing.assert_array_equal(triton.argmax(_cuda(s)).cpu().numpy(), ref_sampling.argmax(s))
    kw = dict(penalty=np.full(b, 2.0), min_len=np.full(b, 10**6), eos_token_ids=[1], banned_ids=[2])
    np.testing.assert_array_equal(triton.fused_argmax(_cuda(s), _cuda(tokens), None, **kw).cpu().numpy(),
                                  ref.fused_argmax(s, tokens, None, **kw))


@pytest.mark.parametrize("impl", _impls())
def test_beam_topk_matches_torch_topk_values(impl, rng):
    import torch

    b, k, v = 8, 4, 50257
    lp = torch.log_softmax(torch.randn(b * k, v, device="cuda"), -1)
    bs = torch.randn(b, k, device="cuda")
    s, i = impl.beam_topk(lp, bs, 2 * k)
    acc = (lp.view(b, k, v) + bs[:, :, None]).view(b, -1)
    want_s, _ = torch.topk(acc, 2 * k)
    assert torch.equal(s, want_s)
    assert torch.equal(torch.gather(acc, 1, i), s)


def test_kv_cache_kernels_on_strided_caches(rng):
    import torch

    from pyengine.backends.torch import triton

    big = torch.zeros(3, 2, 40, 64, device="cuda", dtype=torch.bfloat16)
    view = big[:, :, 4:36]
    values = torch.randn(3, 2, 5, 64, device="cuda", dtype=torch.bfloat16)
    triton.kv_append(view, values, 7)
    assert torch.equal(big[:, :, 11:16], values)
    pool = rng.standard_normal((16, 2, 8, 64)).astype(np.float32)
    table = np.array([[3, 9, -1], [5, 0, 1]], np.int64)
    vals = rng.standard_normal((2, 2, 4, 64)).astype(np.float32)
    want = pool.copy()
    ref_kv.kv_append_paged(want, table, vals, 6)
    got = _cuda(pool)
    triton.kv_append_paged(got, _cuda(table), _cuda(vals), 6)
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    np.testing.assert_array_equal(triton.kv_gather_paged(got, _cuda(table), 10).cpu().numpy(),
                                  ref_kv.kv_gather_paged(want, table, 10))


def test_automatic_choice_on_cuda_tensors_is_an_accelerated_kernel():
    import torch

    from pyengine.backends.torch.backend import TorchBackend

    ops = TorchBackend("cuda").ops
    out = ops.fused_sample(torch.tensor([[0.0, 5.0, 1.0]], device="cuda"), torch.zeros(1, 1, dtype=torch.long, device="cuda"), top_k=1)
    assert out.tolist() == [1] and ops.chosen["fused_sample"].label in ("cuda", "triton")
