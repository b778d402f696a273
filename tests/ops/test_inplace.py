"""The penalties' in-place form (`inplace=True`, `pyengine/ops/logits.py`) and the engine's use of it.

Every registered implementation that takes the flag writes the reference's values into the caller's
buffer; without it the input stays untouched. The processor chain writes in place only into a buffer
it owns (up to the first user processor), the loop only into a step's fresh logits, and the
transformers-compatible LogitsProcessor classes never modify the caller's tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.engine import loop
from pyengine.engine import processors as P
from pyengine.engine.plan import DecodePlan
from pyengine.ops import logits as ref
from tests.helpers import make_backend, to_numpy

torch = pytest.importorskip("torch")

SHAPES = [(1, 9), (3, 111), (33, 50257)]
WORDS = ((7,), (2, 3, 5), (1, 5), (0, 1, 2, 3, 4), (6,))


def inplace_impls(op: str) -> list:
    """The torch implementations of `op` that take `inplace`, plus the NumPy reference."""
    from pyengine.backends.torch.backend import OPS

    out = [pytest.param("reference", getattr(ref, op), id="reference")]
    return out + [pytest.param("torch", impl.fn, id=f"torch-{impl.label}") for impl in OPS[op] if P.takes_inplace(impl.fn)]


def case(shape, rng):
    """Scores with zeros, negatives and ties; a history with repeated ids ending in the bad words' prefixes."""
    b, v = shape
    s = (rng.standard_normal(shape) * 3).astype(np.float32)
    s[:, 0] = 0.0
    tokens = rng.integers(0, v, size=(b, 12))
    tokens[:, 1] = tokens[:, 2] = tokens[:, 3]  # a repeated id is penalised once
    tokens[0, -2:] = [2, 3]  # row 0 ends with the prefix of (2, 3, 5)
    if b > 1:
        tokens[1, -1] = 1  # row 1 ends with the prefix of (1, 5)
    return s, tokens


CALLS = {
    "repetition_penalty": lambda fn, s, t, **kw: fn(s, t, 1.3, **kw),
    "min_length": lambda fn, s, t, **kw: fn(s, t, 20, (4, 6), **kw),
    "bad_words": lambda fn, s, t, **kw: fn(s, t, WORDS, **kw),
}


def _as(kind, a):
    return a if kind == "reference" else torch.from_numpy(a)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", sorted(CALLS))
def test_inplace_writes_the_reference_values_into_scores(op, shape, rng):
    s, tokens = case(shape, rng)
    want = CALLS[op](getattr(ref, op), s, tokens)
    assert not np.array_equal(want, s), "the case must change something"
    for kind, fn in (p.values for p in inplace_impls(op)):
        buf = _as(kind, s.copy())
        got = CALLS[op](fn, buf, _as(kind, tokens), inplace=True)
        np.testing.assert_array_equal(to_numpy(got), want, err_msg=f"{op} {kind} {fn.__module__}")
        np.testing.assert_array_equal(to_numpy(buf), want, err_msg=f"{op} {kind}: not written in place")


@pytest.mark.parametrize("op", sorted(CALLS))
def test_without_inplace_the_input_is_untouched(op, rng):
    s, tokens = case((3, 111), rng)
    for kind, fn in (p.values for p in inplace_impls(op)):
        buf = _as(kind, s.copy())
        CALLS[op](fn, buf, _as(kind, tokens))
        np.testing.assert_array_equal(to_numpy(buf), s, err_msg=f"{op} {kind} {fn.__module__}")


@pytest.mark.parametrize("op", sorted(CALLS))
def test_inplace_on_a_strided_view_still_gives_the_values(op, rng):
    """A non-contiguous buffer (a column slice) cannot take the kernel's in-place form: the values still hold."""
    s, tokens = case((3, 111), rng)
    wide = np.zeros((3, 222), np.float32)
    wide[:, ::2] = s
    want = CALLS[op](getattr(ref, op), s, tokens)
    for kind, fn in (p.values for p in inplace_impls(op)):
        if kind == "reference":
            continue
        view = torch.from_numpy(wide.copy())[:, ::2]
        np.testing.assert_array_equal(to_numpy(CALLS[op](fn, view, torch.from_numpy(tokens), inplace=True)), want)


def test_cpp_out_overload_to_a_separate_buffer_and_bad_out():
    from pyengine.backends.torch import _C

    if _C.available() is not None:
        pytest.skip(f"C++ extension unavailable: {_C.available()}")
    rng = np.random.default_rng(1)
    s, tokens = case((3, 111), rng)
    x, t = torch.from_numpy(s.copy()), torch.from_numpy(tokens)
    out = torch.full_like(x, 7.0)
    torch.ops.pyengine.repetition_penalty.out(x, t, 1.3, out=out)
    np.testing.assert_array_equal(out.numpy(), ref.repetition_penalty(s, tokens, 1.3))
    np.testing.assert_array_equal(x.numpy(), s)
    with pytest.raises(RuntimeError, match="out must be a contiguous float32"):
        torch.ops.pyengine.bad_words.out(x, t, [7], [1], out=torch.empty(3, 110))
    with pytest.raises(RuntimeError, match="out of range"):
        torch.ops.pyengine.min_length.out(x, 2, 5, [111], out=x)


# --- the engine: run_chain and the loop -------------------------------------------------------------------


class Keeper:
    """A user processor that keeps what it is given and returns it unchanged."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append(scores)
        return scores


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_run_chain_owned_writes_in_place_until_a_user_processor(name, rng):
    s, tokens = case((3, 111), rng)
    keeper = Keeper()
    specs = [P.RepetitionPenalty(1.3), P.MinLength(20, (4, 6)), P.Custom(keeper), P.BadWords(WORDS)]
    ops = make_backend(name).ops
    conv = (lambda a: a) if name == "numpy" else torch.from_numpy
    want = ref.bad_words(ref.min_length(ref.repetition_penalty(s, tokens, 1.3), tokens, 20, (4, 6)), tokens, WORDS)

    buf = conv(s.copy())
    plain = P.run_chain(specs, ops, conv(tokens), buf)
    np.testing.assert_array_equal(to_numpy(plain), want)
    np.testing.assert_array_equal(to_numpy(buf), s)  # not owned: never written

    buf = conv(s.copy())
    owned = P.run_chain(specs, ops, conv(tokens), buf, owned=True)
    np.testing.assert_array_equal(to_numpy(owned), want)
    seen = to_numpy(keeper.seen[-1])
    np.testing.assert_array_equal(seen, ref.min_length(ref.repetition_penalty(s, tokens, 1.3), tokens, 20, (4, 6)))
    assert not np.isinf(seen[:, 7]).any(), "bad_words wrote into the array the user processor kept"


def test_logits_processor_classes_never_modify_the_callers_tensor(rng):
    from pyengine.generation import logits_process as lp

    s, tokens = case((3, 111), rng)
    for proc in (lp.RepetitionPenaltyLogitsProcessor(1.3), lp.MinLengthLogitsProcessor(20, [4, 6]),
                 lp.NoBadWordsLogitsProcessor([list(w) for w in WORDS], eos_token_id=[110])):  # fmt: skip
        x = torch.from_numpy(s.copy())
        out = proc(torch.from_numpy(tokens), x)
        np.testing.assert_array_equal(x.numpy(), s, err_msg=type(proc).__name__)
        assert not np.array_equal(out.numpy(), s)


def fresh_step(table: np.ndarray, fresh: bool):
    """A fake model: a new float32 tensor each call (`fresh_logits` as declared) from a fixed table."""

    def step(history):
        return torch.from_numpy(table[(history.sum(dim=1) * 7 + history.shape[1]).numpy() % table.shape[0]].copy())

    step.fresh_logits = fresh
    return step


@pytest.mark.parametrize("output_logits", [False, True])
def test_loop_in_place_gives_the_same_tokens_scores_and_raw_logits(output_logits):
    from pyengine.backends.torch.backend import TorchBackend

    rng = np.random.default_rng(2)
    table = (rng.standard_normal((64, 111)) * 3).astype(np.float32)
    prompt = torch.from_numpy(rng.integers(0, 111, size=(4, 5)))
    specs = [P.RepetitionPenalty(1.5), P.MinNewTokens(5, 3, (6,)), P.BadWords(WORDS)]
    runs = []
    for fresh in (False, True):
        plan = DecodePlan("greedy", specs, max_length=14, eos_token_ids=(6,), pad_token_id=0, output_scores=True,
                          output_logits=output_logits)  # fmt: skip
        runs.append(loop.run(plan, fresh_step(table, fresh), TorchBackend(), prompt.clone()))
    copied, inplace = runs
    assert torch.equal(copied.sequences, inplace.sequences)
    assert len(inplace.scores) == inplace.sequences.shape[1] - 5
    for a, b in zip(copied.scores, inplace.scores):
        assert torch.equal(a, b)  # each step's kept scores are its own, never overwritten later
    assert len({s.data_ptr() for s in inplace.scores}) == len(inplace.scores)
    if output_logits:
        for raw, hist_len in zip(inplace.logits, range(5, 14)):
            seq = inplace.sequences[:, :hist_len]
            want = table[(seq.sum(dim=1) * 7 + hist_len).numpy() % 64]
            np.testing.assert_array_equal(raw.numpy(), want)  # the raw logits were not processed in place
