"""paged_attention: every registered impl against the NumPy reference; PagedKVView.attend against gather+SDPA.

The op reads keys/values through block tables in place. Cases cover what the batch engine feeds it: ragged
rows (decode: one column each; chunked prefill: left-padded chunks over a past), grouped-query heads,
shuffled block tables, blocks shared between rows, and pad columns (zeros).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyengine.backends.torch.attention import attention, build_attention_mask  # noqa: E402
from pyengine.backends.torch.backend import OPS  # noqa: E402
from pyengine.batch.paged_attention import paged_attention_reference  # noqa: E402
from pyengine.batch.paged_cache import PagedKVCache, PagedKVView  # noqa: E402
from tests.tolerances import TOLERANCES  # noqa: E402

ATOL, RTOL = TOLERANCES["float32"]
IMPLS = {impl.label: impl for impl in OPS["paged_attention"]}


def _impl(label: str):
    impl = IMPLS[label]
    reason = impl.available()
    if reason is not None:
        pytest.skip(f"{label}: {reason}")
    return impl.fn


def _case(rng, B, H, Hkv, s, D, P, context, queries):
    """Random pools with a shuffled block table per row (row 1 shares row 0's first block when B > 1)."""
    M = max(-(-c // P) for c in context)
    N = B * M + 3
    k_pool = rng.standard_normal((N, P, Hkv, D)).astype(np.float32)
    v_pool = rng.standard_normal((N, P, Hkv, D)).astype(np.float32)
    table = rng.permutation(N)[: B * M].reshape(B, M).astype(np.int64)
    if B > 1:
        table[1, 0] = table[0, 0]
    query = rng.standard_normal((B, H, s, D)).astype(np.float32)
    return query, k_pool, v_pool, table, np.array(context, dtype=np.int64), np.array(queries, dtype=np.int64)


CASES = [
    # B, H, Hkv, s, D, P, context lens, query lens
    (1, 2, 2, 1, 8, 4, [1], [1]),  # the first token alone
    (3, 4, 2, 1, 16, 4, [9, 1, 17], [1, 1, 1]),  # decode, ragged, GQA
    (2, 6, 2, 5, 8, 8, [5, 12], [5, 3]),  # chunked prefill: a whole prompt next to a chunk over a past
    (3, 9, 3, 7, 64, 16, [40, 7, 23], [7, 2, 0]),  # SmolLM2's head geometry, a row with no query
]


@pytest.mark.parametrize("label", ["cpp", "native"])
@pytest.mark.parametrize("case", CASES)
def test_every_impl_equals_the_reference(label, case):
    fn = _impl(label)
    rng = np.random.default_rng(len(case[6]) * 100 + case[3])
    args = _case(rng, *case)
    expected = paged_attention_reference(*args, scale=0.3)
    got = fn(*(torch.from_numpy(a) for a in args), 0.3)
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL * 10, rtol=RTOL * 10)
    B, s = case[0], case[3]
    for b in range(B):  # pad columns are exact zeros
        assert not got[b, :, : s - case[7][b]].any()


def test_cpp_empty_batch_gives_an_empty_result():
    """No rows (or no query columns): an empty output, not a read past the end of context_lens."""
    fn = _impl("cpp")
    pool = torch.zeros(3, 4, 2, 8)
    none = torch.zeros(0, dtype=torch.long)
    out = fn(torch.zeros(0, 4, 1, 8), pool, pool.clone(), torch.zeros(0, 1, dtype=torch.long), none, none, 1.0)
    assert out.shape == (0, 4, 1, 8)


def test_cpp_rejects_bad_input_with_the_argument_named():
    fn = _impl("cpp")
    args = [torch.from_numpy(a) for a in _case(np.random.default_rng(0), *CASES[1])]
    bad = args[3].clone()
    bad[0, 0] = 10_000
    with pytest.raises(RuntimeError, match="block id 10000 .* out of range"):
        fn(*args[:3], bad, *args[4:], 1.0)
    with pytest.raises(RuntimeError, match="context_len"):
        fn(*args[:4], args[4] * 100, args[5], 1.0)
    with pytest.raises(RuntimeError, match="float32"):
        fn(args[0].double(), *args[1:], 1.0)


def _fill_cache(cache: PagedKVCache, lengths: list[int], rng) -> None:
    """Sequences 0..B-1 holding `lengths[b]` tokens of random keys/values (written through views)."""
    for b, n in enumerate(lengths):
        cache.add_sequence(b, list(range(3, 3 + n)))
        if n == 0:
            continue
        cache.reserve(b, n)
        view = PagedKVView(cache, [b], n)
        for layer in range(len(cache.keys)):
            shape = (1, cache.keys[0].shape[2], n, cache.keys[0].shape[3])
            view._write(layer, torch.from_numpy(rng.standard_normal(shape).astype(np.float32)),
                        torch.from_numpy(rng.standard_normal(shape).astype(np.float32)))  # fmt: skip
        cache.commit(b, list(range(3, 3 + n)), n)


@pytest.mark.parametrize("past,new", [([6, 0, 13], [1, 4, 1]), ([0, 9], [7, 3]), ([20], [1])])
def test_attend_equals_the_gather_path(past, new):
    """attend() (kernel through the tables) == update() + SDPA under the view's mask (the reference path),
    for decode rows, a fresh prompt next to a chunk over a past, and a lone decode."""
    rng = np.random.default_rng(sum(past) + len(new))
    H, Hkv, D = 4, 2, 16
    outs = []
    for kernel in (True, False):
        cache = PagedKVCache(2, Hkv, D, num_blocks=32, block_size=4, enable_prefix_sharing=False)
        _fill_cache(cache, past, np.random.default_rng(1))
        for b, n in enumerate(new):
            cache.reserve(b, n)
        view = PagedKVView(cache, list(range(len(past))), new, paged_attention=kernel)
        s = view.num_new
        q = torch.from_numpy(rng.standard_normal((len(past), H, s, D)).astype(np.float32))
        k = torch.from_numpy(rng.standard_normal((len(past), Hkv, s, D)).astype(np.float32))
        v = torch.from_numpy(rng.standard_normal((len(past), Hkv, s, D)).astype(np.float32))
        rng = np.random.default_rng(sum(past) + len(new))  # same q, k, v for both paths
        outs.append(view.attend(1, q, k, v, 0.25))
    paged, gathered = outs
    real = view.attention_mask[:, -view.num_new :].bool()  # [B, s]: pad columns differ by design
    for b in range(len(past)):
        torch.testing.assert_close(paged[b][:, real[b]], gathered[b][:, real[b]], atol=ATOL * 10, rtol=RTOL * 10)


def test_gather_path_is_the_model_path():
    """attend(paged_attention=False) computes exactly what a model does with update() + its own mask."""
    cache = PagedKVCache(1, 2, 8, num_blocks=8, block_size=4, enable_prefix_sharing=False)
    _fill_cache(cache, [5], np.random.default_rng(2))
    cache.reserve(0, 1)
    view = PagedKVView(cache, [0], 1, paged_attention=False)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 1, 8, generator=g) for n in (2, 2, 2))
    out = view.attend(0, q, k, v, 0.5)
    keys, values = view.update(0, k, v)
    mask, causal = build_attention_mask(view.attention_mask, view.length, 1, q.device)
    assert torch.equal(out, attention(q, keys, values, mask, causal, 0.5)[0].transpose(1, 2))
