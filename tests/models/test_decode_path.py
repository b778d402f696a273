"""The decode path of the PyTorch GPT-2 / LLaMA models (pyengine/backends/torch/decode.py).

Three layers of checks: each C++ decode op against its torch reference; whole-model decode steps against
the reference forward (left padding, prefill + several single-token steps, batch 1 and 3); generate()
against transformers 4.57 token for token. bf16 / int8 weights: logit error bounds against float32.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.backends.torch import decode  # noqa: E402
from pyengine.backends.torch.cache import KVCache  # noqa: E402
from tests.tolerances import TOLERANCES  # noqa: E402

from .conftest import VOCAB, left_padded_batch, positions_from_mask  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]
ATOL, RTOL = TOLERANCES["float32"]

needs_kernels = pytest.mark.skipif(decode.kernels_unavailable() is not None,
                                   reason=f"C++ decode kernels: {decode.kernels_unavailable()}")  # fmt: skip


def _cpp():
    from pyengine.backends.torch import cpp

    return cpp


# -- ops against their references ----------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("M", [1, 3, 4, 9, 17, 40])
@pytest.mark.parametrize("K", [16, 37, 130])
@pytest.mark.parametrize("weights_dtype", ["float32", "bf16", "int8", "kn"])
def test_linear_into_matches_reference(M, K, weights_dtype):
    gen = torch.Generator().manual_seed(M * 1000 + K)
    x = torch.randn(M, K, generator=gen) * 0.3
    floats = [torch.randn(n, K, generator=gen) * 0.1 for n in (5, 64, 67)]  # three parts side by side
    biases = [torch.randn(w.shape[0], generator=gen) for w in floats]
    scales: list[torch.Tensor] = []
    kn = weights_dtype == "kn"
    if kn:
        weights = [w.t().contiguous() for w in floats]  # [K, N]
    elif weights_dtype == "bf16":
        weights = [w.to(torch.bfloat16) for w in floats]
    elif weights_dtype == "int8":
        weights, scales = map(list, zip(*(decode.quantize_int8(w) for w in floats)))
    else:
        weights = floats
    for accumulate in (False, True):
        start = torch.randn(M, 136, generator=gen)
        ours, ref = start.clone(), start.clone()
        _cpp().linear_into(ours, x, weights, scales, biases, accumulate, kn)
        decode.linear_into_reference(ref, x, weights, scales, biases, accumulate, kn)
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)


@needs_kernels
@pytest.mark.parametrize("M", [1, 9, 17])
def test_linear_into_kn_spans_several_column_tiles(M):
    """The [K, N] kernel sums a tile of columns at a time (narrower as rows grow): tile edges stay exact."""
    gen = torch.Generator().manual_seed(M)
    x = torch.randn(M, 37, generator=gen) * 0.3
    weights = [torch.randn(37, n, generator=gen) * 0.1 for n in (9000, 1100)]
    biases = [torch.randn(w.shape[1], generator=gen) for w in weights]
    ours, ref = torch.empty(M, 10100), torch.empty(M, 10100)
    _cpp().linear_into(ours, x, weights, [], biases, False, True)
    decode.linear_into_reference(ref, x, weights, [], biases, False, True)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)


@needs_kernels
def test_linear_into_strided_rows_and_bad_shapes():
    x = torch.randn(3, 2 * 40)[:, :40]  # rows with a stride, as the gate half of gate|up
    w = torch.randn(7, 40)
    out, ref = torch.empty(3, 7), torch.empty(3, 7)
    _cpp().linear_into(out, x, [w], [], [], False, False)
    decode.linear_into_reference(ref, x, [w], [], [], False, False)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=RTOL)
    with pytest.raises(RuntimeError, match="does not match x's K"):
        _cpp().linear_into(out, x, [torch.randn(7, 41)], [], [], False, False)
    with pytest.raises(RuntimeError, match="int8 weights need a per-row float32 scale"):
        _cpp().linear_into(out, x, [torch.zeros(7, 40, dtype=torch.int8)], [], [], False, False)


@needs_kernels
@pytest.mark.parametrize("M", [1, 5])
def test_norms_match_reference(M):
    gen = torch.Generator().manual_seed(M)
    x, w, b = torch.randn(M, 70, generator=gen), torch.randn(70, generator=gen), torch.randn(70, generator=gen)
    ours, ref = torch.empty(M, 70), torch.empty(M, 70)
    _cpp().rms_norm_into(ours, x, w, 1e-6)
    decode.rms_norm_into_reference(ref, x, w, 1e-6)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    _cpp().layer_norm_into(ours, x, w, b, 1e-5)
    decode.layer_norm_into_reference(ref, x, w, b, 1e-5)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)


@needs_kernels
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("mask_dtype", [None, torch.long, torch.bool])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2)])
@pytest.mark.parametrize("table", [False, True])
def test_decode_attention_matches_reference(rope, mask_dtype, heads, table):
    gen = torch.Generator().manual_seed(7)
    B, (H, H_kv), D, T_max, length = 3, heads, 32, 12, 7
    qkv = torch.randn(B, (H + 2 * H_kv) * D, generator=gen)
    caches = [torch.randn(B, H_kv, T_max, D, generator=gen) for _ in range(2)]
    cos = sin = None
    if rope:
        angles = torch.randn(20, D // 2, generator=gen)
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    positions = torch.tensor([7, 4, 2])
    mask = None
    if mask_dtype is not None:
        mask = torch.ones(B, length + 1, dtype=mask_dtype)
        mask[1, :3] = 0
        mask[2, :5] = 0
        mask[2, -1] = 0  # a padded query still sees itself
    rows = torch.randint(0, B, (B, T_max), generator=gen) if table else None  # beam ancestry per position
    ours_caches = [c.clone() for c in caches]
    ours, ref = torch.empty(B, H * D), torch.empty(B, H * D)
    _cpp().decode_attention(ours, qkv, *ours_caches, cos, sin, positions, length, mask, H, D**-0.5, rows)
    decode.decode_attention_reference(ref, qkv, *caches, cos, sin, positions, length, mask, H, D**-0.5, rows)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ours_caches[0], caches[0], atol=ATOL, rtol=RTOL)
    assert torch.equal(ours_caches[1], caches[1])  # values are copied as they are


@needs_kernels
def test_decode_attention_bad_input_is_clear():
    cache = torch.zeros(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="outside a cache of 4 positions"):
        _cpp().decode_attention(torch.empty(1, 16), torch.zeros(1, 48), cache, cache.clone(), None, None,
                                torch.zeros(1, dtype=torch.long), 4, None, 2, 1.0)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"rows\[0, 1\] = 3 is not a row of a batch of 1"):
        _cpp().decode_attention(torch.empty(1, 16), torch.zeros(1, 48), cache, cache.clone(), None, None,
                                torch.zeros(1, dtype=torch.long), 2, None, 2, 1.0, torch.tensor([[0, 3, 0, 0]]))  # fmt: skip


@needs_kernels
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("weights_dtype", ["float32", "bf16", "int8"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("mask_and_table", [False, True])
def test_decode_layers_matches_reference(family, weights_dtype, B, mask_and_table):
    """Three fused layers (one parallel region) against the reference layers built from the ops' references.

    llama: RMSNorm, RoPE, grouped kv heads, gate|up with SiLU. gpt2: LayerNorm with bias, no RoPE, one kv head
    per query head, the tanh GELU, and Conv1D's [in, out] weights (float32; the copies are [out, in]).
    """
    gen = torch.Generator().manual_seed(11)
    gpt2 = family == "gpt2"
    E, H, D, inter, T_max, length, L = 48, 6, 8, 40, 10, 6, 3
    H_kv = H if gpt2 else 2

    def proj(*shapes, bias=False):
        weights = [torch.randn(n, k, generator=gen) * 0.2 for n, k in shapes]
        biases = [torch.randn(n, generator=gen) * 0.1 for n, _ in shapes] if bias else []
        if gpt2:
            weights = [w.t().contiguous() for w in weights]  # Conv1D: [in, out]
        return decode.Linear(weights, biases, weight_kn=gpt2, weights_dtype=weights_dtype)

    if gpt2:
        mlp = [proj((inter, E), bias=True), proj((E, inter), bias=True)]
    else:
        mlp = [proj((inter, E), (inter, E)), proj((E, inter))]
    layers = [(proj((H * D, E), (H_kv * D, E), (H_kv * D, E), bias=True), proj((E, H * D), bias=gpt2), *mlp)
              for _ in range(L)]  # fmt: skip
    projections = [decode.stack_projections(column) for column in zip(*layers)]
    norm_in = [torch.rand(E, generator=gen) + 0.5 for _ in range(L)]
    norm_post = [torch.rand(E, generator=gen) + 0.5 for _ in range(L)]
    extra = {}
    if gpt2:
        extra = dict(norm_in_bias=[torch.randn(E, generator=gen) * 0.1 for _ in range(L)],
                     norm_post_bias=[torch.randn(E, generator=gen) * 0.1 for _ in range(L)],
                     activation="gelu_tanh", weight_kn=layers[0][0].kn)  # fmt: skip
    caches = [[torch.randn(B, H_kv, T_max, D, generator=gen) for _ in range(L)] for _ in range(2)]
    cos = sin = None
    if not gpt2:
        angles = torch.randn(20, D // 2, generator=gen)
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    positions = torch.arange(B) + 3
    scale = [D**-0.5, 0.3, 0.2]
    mask = rows = None
    if mask_and_table:
        mask = torch.ones(B, length + 1, dtype=torch.long)
        mask[-1, :2] = 0
        rows = torch.randint(0, B, (B, T_max), generator=gen)
    x = torch.randn(B, E, generator=gen)
    results = []
    for fn in (_cpp().decode_layers, decode.decode_layers_reference):
        xs, (keys, values) = x.clone(), [[c.clone() for c in kind] for kind in caches]
        mlp_in = torch.empty(B, inter if gpt2 else 2 * inter)
        buffers = torch.empty(B, E), torch.empty(B, (H + 2 * H_kv) * D), torch.empty(B, H * D), mlp_in
        fn(xs, *buffers, norm_in, norm_post, 1e-5, *projections, keys, values, cos, sin, positions, length, mask, H,
           scale, rows, **extra)  # fmt: skip
        results.append((xs, keys + values))
    (ours, our_caches), (ref, ref_caches) = results
    assert not torch.equal(ours, x)  # the residual stream moved
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    for got, want in zip(our_caches, ref_caches):  # every layer wrote its own cache
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    assert all(not torch.equal(got[:, :, length], before[:, :, length]) for got, before in zip(our_caches, caches[0] + caches[1]))


@needs_kernels
def test_decode_layers_over_paged_blocks_equal_the_dense_cache():
    """The batch engine's layout (pools [N, P, H_kv, D], block tables, a write slot per row) gives the same
    residual and writes the same new keys/values as a KVCache holding the same positions."""
    gen = torch.Generator().manual_seed(5)
    B, E, H, H_kv, D, inter, L, P, N = 3, 32, 4, 2, 8, 24, 2, 4, 20
    lin = [decode.stack_projections([decode.Linear([torch.randn(n, k, generator=gen) * 0.2])] * L)
           for n, k in (((H + 2 * H_kv) * D, E), (E, H * D), (2 * inter, E), (E, inter))]  # fmt: skip
    norms = [[torch.rand(E, generator=gen) + 0.5 for _ in range(L)] for _ in range(2)]
    angles = torch.randn(32, D // 2, generator=gen)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    context = torch.tensor([5, 9, 1])  # positions per row, the new one included
    table = torch.randperm(N, generator=gen)[: B * 3].view(B, 3)  # each row's blocks, scattered over the pool
    slots = torch.stack([table[b, (context[b] - 1) // P] * P + (context[b] - 1) % P for b in range(B)])
    pools = [[torch.randn(N, P, H_kv, D, generator=gen) for _ in range(L)] for _ in range(2)]
    T = int(context.max())
    dense = [[torch.zeros(B, H_kv, T, D) for _ in range(L)] for _ in range(2)]  # row b left-padded to T
    mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        pad = T - int(context[b])
        mask[b, pad:] = 1
        for t in range(int(context[b]) - 1):  # the past positions; the new one is written by the call
            slot = table[b, t // P] * P + t % P
            for kind in range(2):
                for layer in range(L):
                    dense[kind][layer][b, :, pad + t] = pools[kind][layer].view(N * P, H_kv, D)[slot]
    x = torch.randn(B, E, generator=gen)
    positions = context - 1
    results = []
    for paged in (True, False):
        xs = x.clone()
        keys, values = [[c.clone() for c in kind] for kind in (pools if paged else dense)]
        buffers = torch.empty(B, E), torch.empty(B, (H + 2 * H_kv) * D), torch.empty(B, H * D), torch.empty(B, 2 * inter)
        if paged:
            _cpp().decode_layers(xs, *buffers, *norms, 1e-5, *lin, keys, values, cos, sin, positions, 0, None, H,
                                 [D**-0.5] * L, paged=(table, context, slots))  # fmt: skip
            new = [[c.view(N * P, H_kv, D)[slots] for c in kind] for kind in (keys, values)]
        else:  # every row's new position is T - 1 in the left-padded dense layout
            _cpp().decode_layers(xs, *buffers, *norms, 1e-5, *lin, keys, values, cos, sin, positions, T - 1, mask, H,
                                 [D**-0.5] * L)  # fmt: skip
            new = [[c[:, :, T - 1] for c in kind] for kind in (keys, values)]
        results.append((xs, new))
    (ours, our_new), (ref, ref_new) = results
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    for got, want in zip(our_new[0] + our_new[1], ref_new[0] + ref_new[1]):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    with pytest.raises(RuntimeError, match=r"block_table\[1, 2\] = 99 is not a block of 20"):
        bad = table.clone()
        bad[1, 2] = 99
        _cpp().decode_layers(x.clone(), *buffers, *norms, 1e-5, *lin, pools[0], pools[1], cos, sin, positions, 0,
                             None, H, [D**-0.5] * L, paged=(bad, context, slots))  # fmt: skip


@needs_kernels
def test_decode_layers_bad_input_is_clear():
    lin = decode.stack_projections([decode.Linear([torch.zeros(8, 8)])])
    x = torch.zeros(1, 8)
    cache = [torch.zeros(1, 1, 4, 2)]

    def call(norm_in, scale=(1.0,), qkv=lin):
        _cpp().decode_layers(x, torch.empty(1, 8), torch.empty(1, 8), torch.empty(1, 8), torch.empty(1, 16), norm_in,
                             [torch.ones(8)], 1e-5, qkv, lin, lin, lin, cache, [c.clone() for c in cache], None, None,
                             torch.zeros(1, dtype=torch.long), 0, None, 2, list(scale))  # fmt: skip

    with pytest.raises(RuntimeError, match=r"decode_layers: norm weights must be contiguous float32 \[8\], layer 0"):
        call([torch.ones(7)])
    with pytest.raises(RuntimeError, match="one entry per layer; got 1, 1, 1, 1 and 2"):
        call([torch.ones(8)], scale=(1.0, 1.0))
    with pytest.raises(RuntimeError, match="decode_layers: pass at least one weight"):
        call([torch.ones(8)], qkv=([], [], []))
    with pytest.raises(RuntimeError, match='activation must be "silu_mul" or "gelu_tanh", got "relu"'):
        _cpp().decode_layers(x, torch.empty(1, 8), torch.empty(1, 8), torch.empty(1, 8), torch.empty(1, 16),
                             [torch.ones(8)], [torch.ones(8)], 1e-5, lin, lin, lin, lin, cache, cache, None, None,
                             torch.zeros(1, dtype=torch.long), 0, None, 2, [1.0], activation="relu")  # fmt: skip


def test_low_precision_copies_live_in_one_huge_page_arena(families):
    """bf16 copies are placed back to back in layer order, on a 2 MB boundary where THP can be asked for."""
    from pyengine.backends.torch import hugepages

    big = decode.Linear([torch.randn(1024, 1024)], weights_dtype="bf16")  # 2 MB of bf16
    small = decode.Linear([torch.randn(24, 41), torch.randn(8, 41)], weights_dtype="bf16")
    before = [w.clone() for w in big.weights + small.weights]
    decode.place_on_hugepages([big, small])
    for old, new in zip(before, big.weights + small.weights):
        assert torch.equal(old, new)
    if hugepages.available():
        assert big.weights[0].data_ptr() % hugepages.HUGE_PAGE == 0
        assert small.weights[0].data_ptr() == big.weights[0].data_ptr() + 1024 * 1024 * 2  # in order, no gap
        assert small.weights[1].data_ptr() - small.weights[0].data_ptr() == 1984  # 1968 bytes, up to a cache line


# -- the screened head (top_logits) ------------------------------------------------------------------------------
def _one_row_logits(x, weight):
    """x @ W^T one row at a time through linear_into: the arithmetic the screen recomputes candidates with."""
    out = torch.empty(x.shape[0], weight.shape[0])
    for m in range(x.shape[0]):
        _cpp().linear_into(out[m : m + 1], x[m : m + 1], [weight], [], [])
    return out


def _top_set(logits, k):
    """Per row, the columns holding at least the row's k-th largest value (ties included)."""
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits >= kth


@needs_kernels
@pytest.mark.parametrize("M", [1, 3, 9, 16])
@pytest.mark.parametrize("k", [1, 7, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top_logits_keeps_every_top_logit_exactly(M, k, dtype):
    gen = torch.Generator().manual_seed(M * 100 + k)
    weight = (torch.randn(3001, 96, generator=gen) * 0.05).to(dtype)
    x = torch.randn(M, 96, generator=gen) * 2
    screen = decode.screen_weights(weight)
    ours, ref = torch.empty(M, 3001), torch.empty(M, 3001)
    kept = _cpp().top_logits(ours, x, screen, weight, k)
    kept_ref = decode.top_logits_reference(ref, x, screen, weight, k)
    exact = _one_row_logits(x, weight)
    finite = torch.isfinite(ours)
    assert int(finite.sum()) == kept < M * 3001 // 4  # the screen ruled most of the row out
    assert torch.all(finite[_top_set(exact, k)])  # every top-k logit (and tie) is kept ...
    assert torch.equal(ours[finite], exact[finite])  # ... with the value of the one-row product
    assert torch.all(ours[~finite] == float("-inf"))
    # The reference keeps the same top k (its int8 estimate is float64, so its candidate count may differ by a few).
    assert abs(kept - kept_ref) <= max(4, kept // 20)
    torch.testing.assert_close(ours.topk(k, dim=1).values, ref.topk(k, dim=1).values, atol=ATOL, rtol=RTOL)
    assert torch.equal(_top_set(ours, k), _top_set(exact, k))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_screen_kernel_matches_reference(dtype):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(700, 130, generator=gen) * torch.logspace(-30, 30, 700)[:, None]
    weight[3] = 0  # an all-zero row: the smallest scale
    weight[5, :7] = 0.5 * (torch.arange(7) * 2 + 1) * (weight[5].abs().amax() / 127)  # halves: ties to even
    weight = weight.to(dtype)
    ours, ref = decode.screen_weights(weight), decode.screen_weights_reference(weight)
    assert torch.equal(ours.q, ref.q) and torch.equal(ours.scale, ref.scale)
    torch.testing.assert_close(ours.slack, ref.slack, atol=0, rtol=1e-6)
    assert ours.slack[3] == 0 and torch.all(ours.slack[torch.arange(700) != 3] > 0)  # exact only for the zero row


@needs_kernels
def test_top_logits_bound_holds_and_hard_rows_fall_back():
    gen = torch.Generator().manual_seed(0)
    # Rows nearly equal to each other: int8 cannot tell them apart, so the bound keeps all of them and the
    # row is computed in full; the top logit is still the exact one.
    base = torch.randn(1, 64, generator=gen)
    weight = base + torch.randn(500, 64, generator=gen) * 1e-6
    screen = decode.screen_weights(weight)
    x = torch.randn(2, 64, generator=gen) * 10
    out = torch.empty(2, 500)
    assert _cpp().top_logits(out, x, screen, weight, 1) == 2 * 500
    torch.testing.assert_close(out, _one_row_logits(x, weight), atol=0, rtol=0)
    # The bound itself: |exact - int8 estimate| <= ||x|| * slack, for x of very different sizes.
    weight = torch.randn(2000, 200, generator=gen) * 0.1
    screen = decode.screen_weights(weight)
    for size in (1e-3, 1.0, 1e3):
        x = torch.randn(5, 200, generator=gen) * size
        approx = torch.empty(5, 2000)
        _cpp().linear_into(approx, x, [screen.q], [screen.scale], [])
        err = (_one_row_logits(x, weight).double() - approx.double()).abs()
        bound = x.double().norm(dim=1, keepdim=True) * screen.slack.double()
        assert torch.all(err <= bound)
        assert err.max() > bound.max() * 1e-3  # and it is not vacuous
    # Non-finite x: the row is computed in full (nothing to bound with).
    x = torch.randn(1, 200, generator=gen)
    x[0, 3] = float("inf")
    out = torch.empty(1, 2000)
    assert _cpp().top_logits(out, x, screen, weight, 1) == 2000
    # A head holding a non-finite value is never screened.
    bad = weight.clone()
    bad[7, 7] = float("nan")
    assert decode.screen_weights(bad) is False
    head = decode.Head(bad)
    assert not head.screens(1, 1)


@needs_kernels
def test_top_logits_bad_input_is_clear():
    weight = torch.randn(300, 32)
    screen = decode.screen_weights(weight)
    x, out = torch.randn(2, 32), torch.empty(2, 300)
    with pytest.raises(RuntimeError, match="k must be >= 1"):
        _cpp().top_logits(out, x, screen, weight, 0)
    with pytest.raises(RuntimeError, match="same shape"):
        _cpp().top_logits(out, x, screen, weight[:200].contiguous(), 1)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        _cpp().top_logits(out, x, screen, screen.q, 1)
    with pytest.raises(RuntimeError, match="out must be"):
        _cpp().top_logits(torch.empty(2, 299), x, screen, weight, 1)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_forward_rejects_a_bad_top_logits(families, name):
    _, ours = _model(families, name)
    ids = torch.randint(1, VOCAB, (1, 3), generator=torch.Generator().manual_seed(0))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="top_logits must be a positive int"):
            ours(ids, top_logits=bad)


def test_head_screens_only_where_it_pays():
    weight = torch.randn(300, 32)
    assert decode.Head(weight).screens(1, 1) and decode.Head(weight, "bf16").screens(decode.TOP_LOGITS_MAX_ROWS, 50)
    assert not decode.Head(weight).screens(1, None)
    assert not decode.Head(weight).screens(decode.TOP_LOGITS_MAX_ROWS + 1, 1)  # compute-bound: no gain
    assert not decode.Head(weight).screens(1, decode.TOP_LOGITS_MAX_K + 1)
    assert not decode.Head(weight, "int8").screens(1, 1)  # already int8


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("weights_dtype", ["float32", "bf16"])
@pytest.mark.parametrize("mode", [dict(do_sample=False), dict(do_sample=True, top_k=20, temperature=0.7),
                                  dict(do_sample=True, top_k=8, top_p=0.8, seed=[5, 6, 7])])  # fmt: skip
def test_generate_takes_the_screened_head_and_keeps_its_tokens(families, name, weights_dtype, mode, monkeypatch):
    _, ours = _model(families, name, seed=2)
    ours.quantize(weights_dtype)
    ids, mask = left_padded_batch(torch.Generator().manual_seed(5), pads=(0, 3, 1), length=6)
    kwargs = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, **mode)
    cpp, calls = _cpp(), []
    real = cpp.top_logits
    monkeypatch.setattr(cpp, "top_logits", lambda out, x, screen, weight, k: calls.append(k) or real(out, x, screen, weight, k))
    try:
        outs = []
        for screened in (False, True):
            ours.accepts_top_logits = screened
            torch.manual_seed(0)
            outs.append(ours.generate(ids, **kwargs))
        assert torch.equal(outs[0], outs[1])
        assert calls == [mode.get("top_k", 1)] * 9  # every decode step (the first token is the prefill's)
    finally:
        ours.quantize("float32")
        del ours.accepts_top_logits


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_screened_head_follows_in_place_changes_of_the_weights(families, name):
    _, ours = _model(families, name, seed=2)
    ids = torch.randint(1, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    ours.generate(ids, **kwargs)  # builds the screen
    head = ours.get_output_embeddings().weight
    with torch.no_grad():
        head[torch.randperm(head.shape[0], generator=torch.Generator().manual_seed(1))[:50]] *= 40  # new winners
    screened = ours.generate(ids, **kwargs)
    ours.accepts_top_logits = False
    try:
        assert torch.equal(screened, ours.generate(ids, **kwargs))
    finally:
        del ours.accepts_top_logits


# -- whole models: decode path against the reference forward ---------------------------------------------------
def _model(families, name, seed=0):
    return families[name].hf_pair(seed=seed)


def _steps(model, ids, mask, prefill: int, reference: bool) -> list[torch.Tensor]:
    """Prefill `prefill` columns, then one token per step; the logits of every decode step."""
    model.decode_path_enabled = not reference
    positions = positions_from_mask(mask)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    with torch.no_grad():
        model(ids[:, :prefill], attention_mask=mask[:, :prefill], position_ids=positions[:, :prefill],
              past_key_values=cache)  # fmt: skip
        out = []
        for t in range(prefill, ids.shape[1]):
            logits = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], position_ids=positions[:, t : t + 1],
                           past_key_values=cache).logits  # fmt: skip
            out.append(logits[:, 0])
    model.decode_path_enabled = True
    return out


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("pads", [(0,), (0, 2, 5)])
def test_decode_steps_match_reference_forward(families, name, pads):
    _, ours = _model(families, name)
    ids, mask = left_padded_batch(torch.Generator().manual_seed(3), pads=pads, length=11)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits  # reference, no cache
    fast = _steps(ours, ids, mask, prefill=6, reference=False)
    assert isinstance(ours.__dict__.get("_decode_state"), ours._decode_path_class)  # the path really ran
    for i, logits in enumerate(fast):
        torch.testing.assert_close(logits, full[:, 6 + i], atol=ATOL, rtol=RTOL)


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decode_path_grows_a_small_cache_and_skips_when_outputs_are_asked(families, name):
    _, ours = _model(families, name)
    ids = torch.randint(1, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = ours(ids).logits
        cache = ours.new_cache(2, 3)  # too small: the decode path grows it as the reference does
        ours(ids[:, :3], past_key_values=cache)
        for t in (3, 4):
            step = ours(ids[:, t : t + 1], past_key_values=cache).logits[:, 0]
            torch.testing.assert_close(step, full[:, t], atol=ATOL, rtol=RTOL)
        out = ours(ids[:, :1], past_key_values=ours.new_cache(2, 4), output_hidden_states=True)
    assert out.hidden_states is not None  # the reference forward answered


class _AttendingCache(KVCache):
    """A cache that attends itself (the batch engine's contract): dense storage, plain softmax attention."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def attend(self, layer_idx, query, key, value, scaling):
        self.calls += 1
        keys, values = self.update(layer_idx, key, value)  # [B, H_kv, T, D]
        groups = query.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
        scores = query @ keys.transpose(2, 3) * scaling  # [B, H, s, T]
        s, t = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(s, t, dtype=torch.bool).tril(t - s), float("-inf"))
        return torch.softmax(scores, -1) @ values  # [B, H, s, D]


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_cache_with_attend_is_delegated_to(families, name):
    _, ours = _model(families, name)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = ours(ids).logits
        cache = _AttendingCache(ours.num_layers, 2, ours.num_kv_heads, ours.head_dim, 7)
        prefill = ours(ids[:, :4], past_key_values=cache).logits  # reference forward, attention delegated
        torch.testing.assert_close(prefill, full[:, :4], atol=ATOL, rtol=RTOL)
        for t in range(4, 7):  # decode path, attention delegated
            step = ours(ids[:, t : t + 1], past_key_values=cache).logits[:, 0]
            torch.testing.assert_close(step, full[:, t], atol=ATOL, rtol=RTOL)
    assert cache.calls == 4 * ours.num_layers


# -- generate() against transformers ----------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3)])
def test_generate_tokens_match_transformers(families, name, mode):
    hf, ours = _model(families, name, seed=2)
    ids, mask = left_padded_batch(torch.Generator().manual_seed(5), pads=(0, 3, 1), length=6)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, **mode)
    with torch.no_grad():
        theirs = hf.generate(ids, **kwargs)
    ours_out = ours.generate(ids, **kwargs)
    assert torch.equal(ours_out, theirs)
    assert isinstance(ours.__dict__.get("_decode_state"), ours._decode_path_class)


# -- lower-precision weights -------------------------------------------------------------------------------------
# Relative logit error bounds (max |error| / max |logit|) on the tiny models: bf16 keeps 8 mantissa bits
# (~0.4% per weight), int8 per-row scales ~0.4% of the row's largest weight; errors average out over K.
BOUNDS = {"bf16": 0.02, "int8": 0.03}


@needs_kernels
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("weights_dtype", ["bf16", "int8"])
def test_low_precision_weights_error_bounds(families, name, weights_dtype):
    _, ours = _model(families, name)
    ids, mask = left_padded_batch(torch.Generator().manual_seed(4), pads=(0, 2), length=10)
    reference = torch.stack(_steps(ours, ids, mask, prefill=4, reference=True))  # [steps, B, V]
    ours.quantize(weights_dtype)
    try:
        low = torch.stack(_steps(ours, ids, mask, prefill=4, reference=False))
        err = (low - reference).abs()
        scale = reference.abs().max()
        assert err.max() / scale < BOUNDS[weights_dtype], f"{weights_dtype}: relative logit error {err.max() / scale}"
        assert err.max() > 0  # the low-precision weights were really used
        # Greedy choice agrees wherever the float32 margin between the top two exceeds twice the error.
        top2 = reference.topk(2, dim=-1).values
        clear = (top2[..., 0] - top2[..., 1]) > 2 * err.max()
        assert torch.equal(low.argmax(-1)[clear], reference.argmax(-1)[clear])
    finally:
        ours.quantize("float32")


def test_quantize_rejects_unknown_dtype(families):
    _, ours = _model(families, "llama")
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        ours.quantize("int4")
