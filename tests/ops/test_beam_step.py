"""`beam_step`: every torch implementation (C++, native) against the NumPy reference, step after step.

Each case runs a whole search (random logits each step, until the op says done or max length) on the
reference and on the implementation from the same initial state, and compares after every step: ids,
indices and flags exactly, scores within the float32 tolerance. Shapes: batch 1/3, beams 1/2/4,
vocabularies 7/111/50257, rows of -inf, exactly tied candidates (integer log-probs, fed with
`log_softmax=False` so both sides add the very same floats), processors, all early-stopping modes.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyengine.backends.numpy.backend import NumpyBackend  # noqa: E402
from pyengine.backends.torch import _C  # noqa: E402
from pyengine.backends.torch.backend import OPS, TorchBackend  # noqa: E402
from pyengine.engine.beam_search import init_state  # noqa: E402
from pyengine.ops import beam as ref  # noqa: E402
from tests.tolerances import TOLERANCES  # noqa: E402

ATOL, RTOL = TOLERANCES["float32"]
FIELDS_EXACT = ("running", "running_idx", "sequences", "beam_idx", "is_finished", "improvable")
FIELDS_FLOAT = ("running_scores", "beam_scores")


TORCH_NATIVE = next(impl.fn for impl in OPS["beam_step"] if impl.label == "native")


def _impls():
    out = []
    for impl in OPS["beam_step"]:
        reason = impl.available()
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(impl.fn, id=impl.label, marks=marks))
    return out


def _states(B, K, S, T, fill, seed):
    prompt = np.random.default_rng(seed).integers(0, 7, (B, S)).repeat(K, axis=0)  # [B*K, S], ids < every V
    return init_state(NumpyBackend(), prompt, K, T, fill), init_state(TorchBackend(), torch.from_numpy(prompt), K, T, fill)


def _compare(ref_state, got_state, step, strict=True, all_hit=False):
    """Every field; `strict=False` (torch.topk, whose order of exactly equal scores is unspecified) skips the
    finished-set slots that hold no finished hypothesis (placeholders scored -1e9, never returned) and, on a
    step where every candidate hit a criterion (the last one), the live beams (all scored -1e9)."""
    real = ref_state.is_finished if not strict else np.ones(ref_state.is_finished.shape, bool)
    for name in FIELDS_EXACT + FIELDS_FLOAT:
        if not strict and all_hit and name.startswith("running"):
            continue
        want, got = getattr(ref_state, name), getattr(got_state, name).numpy()
        if name in ("sequences", "beam_idx", "beam_scores", "is_finished"):
            want, got = want[real], got[real]
        if name in FIELDS_EXACT:
            np.testing.assert_array_equal(got, want, err_msg=f"{name} after step {step}")
        else:
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"{name} after step {step}")


def _logits(rng, N, V, kind):
    if kind == "ties":  # integer log-probs: many exactly equal candidates across beams and tokens
        return -rng.integers(0, 3, (N, V)).astype(np.float32)
    x = (rng.standard_normal((N, V)) * 3).astype(np.float32)
    if kind == "neginf":
        x[rng.random((N, V)) < 0.3] = -np.inf
        x[0] = -np.inf  # a whole row without a finite logit
    return x


def _run(fn, B, K, V, *, kind="normal", eos=(2,), S=3, T=9, seed=0, **kw):
    rng = np.random.default_rng(seed)
    fill = eos[0] if eos else -1
    r_state, t_state = _states(B, K, S, T, fill, seed)
    cur, steps = S, 0
    while cur < T:
        x = _logits(rng, B * K, V, kind)
        args = dict(eos_token_ids=eos, log_softmax=kind != "ties", **kw)
        r_out, t_out = np.zeros_like(x), torch.zeros(x.shape)
        r_parent, r_done = ref.beam_step(x, r_state, cur, S, T, scores_out=r_out, **args)
        t_parent, t_done = fn(torch.from_numpy(x), t_state, cur, S, T, scores_out=t_out, **args)
        all_hit = cur + 1 >= T or kw.get("stop_all", False)
        _compare(r_state, t_state, steps, strict=fn is not TORCH_NATIVE, all_hit=all_hit)
        if fn is not TORCH_NATIVE or not all_hit:
            np.testing.assert_array_equal(t_parent.numpy(), r_parent)
        np.testing.assert_allclose(t_out.numpy(), r_out, atol=ATOL, rtol=RTOL)
        assert bool(t_done) == r_done, f"done differs after step {steps}"
        cur, steps = cur + 1, steps + 1
        if r_done:
            break
    return steps


@pytest.mark.parametrize("fn", _impls())
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("V", [7, 111])
def test_small_shapes(fn, B, K, V):
    _run(fn, B, K, V, seed=B * 100 + K * 10 + V)


@pytest.mark.parametrize("fn", _impls())
@pytest.mark.parametrize("B,K", [(1, 4), (3, 2)])
def test_gpt2_vocabulary(fn, B, K):
    _run(fn, B, K, 50257, T=6, seed=B + K)


@pytest.mark.parametrize("fn", _impls())
@pytest.mark.parametrize("kind", ["ties", "neginf"])
@pytest.mark.parametrize("B,K,V", [(1, 2, 7), (3, 4, 111), (3, 4, 7)])
def test_ties_and_neginf(fn, kind, B, K, V):
    if fn is TORCH_NATIVE:  # both kinds make exactly equal candidates (-inf ones too) compete for places
        pytest.skip("torch.topk orders exactly equal scores arbitrarily; the C++ op and the reference do not")
    _run(fn, B, K, V, kind=kind, seed=V + K)


@pytest.mark.parametrize("fn", _impls())
@pytest.mark.parametrize("kw", [
    {"length_penalty": 0.0}, {"length_penalty": 2.0, "early_stopping": 2}, {"length_penalty": -0.5, "early_stopping": 2},
    {"early_stopping": 1}, {"early_stopping": 1, "length_penalty": 0.7},
    {"penalty": 1.7}, {"penalty": 0.6, "min_len": 7, "banned_ids": (4, 5)}, {"stop_all": True},
    {"eos": (2, 3)}, {"eos": ()}, {"eos": (2, 500)},  # an EOS outside the vocabulary never comes
])  # fmt: skip
def test_processors_and_stopping(fn, kw):
    kw = dict(kw)
    steps = _run(fn, 3, 3, 111, eos=kw.pop("eos", (2,)), T=12, seed=len(kw), **kw)
    assert steps >= 1


def test_frequent_eos_finishes_hypotheses():
    """A biased EOS makes hypotheses finish early: the finished set and the early stop must be exercised."""
    rng = np.random.default_rng(5)
    B, K, V, S, T = 2, 3, 11, 2, 14
    r_state, t_state = _states(B, K, S, T, 2, 5)
    cur, done = S, False
    while cur < T and not done:
        x = (rng.standard_normal((B * K, V)) * 2).astype(np.float32)
        x[:, 2] += 2.5  # EOS likely
        _, done = ref.beam_step(x, r_state, cur, S, T, eos_token_ids=(2,))
        if _C.available() is None:
            from pyengine.backends.torch import cpp

            _, t_done = cpp.beam_step(torch.from_numpy(x), t_state, cur, S, T, eos_token_ids=(2,))
            _compare(r_state, t_state, cur)
            assert t_done == done
        cur += 1
    assert r_state.is_finished.any() and cur < T  # finished hypotheses, and an early end


@pytest.mark.skipif(_C.available() is not None, reason=str(_C.available()))
@pytest.mark.parametrize("break_it,match", [
    (lambda s, x: setattr(s, "running_scores", s.running_scores.double()), "running_scores"),
    (lambda s, x: setattr(s, "running", s.running[:, :, :5]), "max_length"),
    (lambda s, x: x.__setitem__(0, x[0][:3]), "rows"),
])  # fmt: skip
def test_bad_input_is_refused_clearly(break_it, match):
    from pyengine.backends.torch import cpp

    _, state = _states(2, 2, 3, 9, 2, 0)
    x = [torch.zeros(4, 7)]
    break_it(state, x)
    with pytest.raises((RuntimeError, ValueError), match=match):
        cpp.beam_step(x[0], state, 3, 3, 9, eos_token_ids=(2,))
    _, state = _states(2, 2, 3, 9, 2, 0)
    with pytest.raises(RuntimeError, match="banned"):
        cpp.beam_step(torch.zeros(4, 7), state, 3, 3, 9, banned_ids=(7,))


def _reorder_impls():
    return [pytest.param(i.fn, id=i.label, marks=[pytest.mark.skip(reason=i.available())] if i.available() else [])
            for i in OPS["kv_reorder_suffix"]]


@pytest.mark.parametrize("fn", _reorder_impls())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index", [[0, 0, 0, 0, 0], [1, 0, 3, 2, 4], [2, 0, 1, 1, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]])
def test_kv_reorder_suffix_matches_reference(fn, dtype, index):
    """Swaps, cycles and forks: sources that are themselves rewritten must be read before."""
    gen = torch.Generator().manual_seed(sum(index))
    caches = [torch.randn(5, 3, 11, 4, generator=gen).to(dtype) for _ in range(4)]  # [B, H, T, D]
    start = torch.tensor([0, 3, 9, 2, 5])
    length = 9  # row 2's suffix is empty; positions 9.. must stay untouched
    want = [c.float().numpy().copy() for c in caches]
    ref.kv_reorder_suffix(want, np.array(index), start.numpy(), length)
    fn(caches, torch.tensor(index), start, length)
    for got, w in zip(caches, want):
        np.testing.assert_array_equal(got.float().numpy(), w)
