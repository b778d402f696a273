"""Every LogitsProcessor class over random scores and ids: the transformers contract.

`processor(input_ids [B, T], scores [B, V]) -> scores [B, V]` never modifies `scores` (or `input_ids`) in
place and returns the same shape and dtype, whatever the values: -inf rows, NaN, +inf, all-equal rows,
half precision. transformers' own test suite asserts the in-place part for its processors.
"""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyengine.generation import logits_process as lp  # noqa: E402

EOS = 2
V = 23  # odd, and smaller than the default top_k


def _make(name: str, encoder_ids: torch.Tensor):
    """One instance per class; arguments chosen so every branch of the processor can fire.

    `encoder_ids` has the batch of the scores: two "beams" per item share one encoder row in the n-gram case.
    """
    return {
        "TemperatureLogitsWarper": lambda: lp.TemperatureLogitsWarper(0.7),
        "TopKLogitsWarper": lambda: lp.TopKLogitsWarper(3),
        "TopPLogitsWarper": lambda: lp.TopPLogitsWarper(0.5),
        "MinPLogitsWarper": lambda: lp.MinPLogitsWarper(0.1),
        "RepetitionPenaltyLogitsProcessor": lambda: lp.RepetitionPenaltyLogitsProcessor(1.3),
        "NoRepeatNGramLogitsProcessor": lambda: lp.NoRepeatNGramLogitsProcessor(2),
        "NoBadWordsLogitsProcessor": lambda: lp.NoBadWordsLogitsProcessor(
            [[1], [3, 4], [EOS]], eos_token_id=EOS
        ),
        "MinLengthLogitsProcessor": lambda: lp.MinLengthLogitsProcessor(5, EOS),
        "MinNewTokensLengthLogitsProcessor": lambda: lp.MinNewTokensLengthLogitsProcessor(1, 3, [EOS, 5]),
        "ForcedBOSTokenLogitsProcessor": lambda: lp.ForcedBOSTokenLogitsProcessor(1),
        "ForcedEOSTokenLogitsProcessor": lambda: lp.ForcedEOSTokenLogitsProcessor(4, EOS),
        "HammingDiversityLogitsProcessor": lambda: lp.HammingDiversityLogitsProcessor(0.5, 2, 2),
        "EncoderRepetitionPenaltyLogitsProcessor": lambda: lp.EncoderRepetitionPenaltyLogitsProcessor(
            1.5, encoder_ids
        ),
        "EncoderNoRepeatNGramLogitsProcessor": lambda: lp.EncoderNoRepeatNGramLogitsProcessor(
            2, encoder_ids[::2]
        ),
        "PrefixConstrainedLogitsProcessor": lambda: lp.PrefixConstrainedLogitsProcessor(
            lambda b, ids: [0, 7], 1
        ),
        "InfNanRemoveLogitsProcessor": lambda: lp.InfNanRemoveLogitsProcessor(),
    }[name]()


PROCESSORS = sorted(
    name
    for name, obj in vars(lp).items()
    if inspect.isclass(obj) and issubclass(obj, lp.LogitsProcessor) and obj is not lp.LogitsProcessor
)


def test_every_processor_class_is_covered():
    """A new processor class must be added to `_make` (and so to the contract test)."""
    ids = torch.zeros(2, 2, dtype=torch.long)
    for name in PROCESSORS:
        assert isinstance(_make(name, ids), lp.LogitsProcessor), name


SPECIALS = ["none", "neg_inf_some", "neg_inf_row", "nan", "pos_inf", "all_equal"]


def _scores(seed: int, batch: int, special: str, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, V, generator=gen) * 4
    if special == "neg_inf_some":
        scores[torch.rand(batch, V, generator=gen) < 0.5] = -float("inf")
    elif special == "neg_inf_row":
        scores[0] = -float("inf")
    elif special == "nan":
        scores[0, seed % V] = float("nan")
    elif special == "pos_inf":
        scores[-1, (seed + 1) % V] = float("inf")
    elif special == "all_equal":
        scores[:] = 1.5
    return scores.to(dtype)


@pytest.mark.parametrize("name", PROCESSORS)
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.integers(1, 2),
    length=st.integers(1, 6),
    special=st.sampled_from(SPECIALS),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_processor_keeps_input_and_returns_same_shape_and_dtype(name, seed, groups, length, special, dtype):
    batch = 2 * groups  # Hamming diversity needs whole beam groups (num_beams=2)
    gen = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, V, (batch, length), generator=gen)
    input_ids[:, -1] = input_ids[:, 0]  # a repeated token, so the n-gram and penalty paths have work
    scores = _scores(seed, batch, special, dtype)
    processor = _make(name, input_ids.clone())
    scores_before, ids_before = scores.clone(), input_ids.clone()
    if name == "HammingDiversityLogitsProcessor":
        current = torch.randint(0, V, (batch,), generator=gen)
        out = processor(input_ids, scores[: batch // 2], current_tokens=current, beam_group_idx=1)
        assert out.shape == (batch // 2, V)
    else:
        out = processor(input_ids, scores)
        assert out.shape == scores.shape
    assert out.dtype == scores.dtype, f"{name}: {scores.dtype} in, {out.dtype} out"
    torch.testing.assert_close(
        scores, scores_before, rtol=0, atol=0, equal_nan=True, msg=f"{name} wrote to scores"
    )
    assert torch.equal(input_ids, ids_before), f"{name} wrote to input_ids"


@pytest.mark.parametrize("top_p", [0.0, 1.0])
def test_top_p_edges(top_p):
    """top_p=0 keeps exactly the best token (min_tokens_to_keep=1); top_p=1 keeps everything finite."""
    scores = torch.randn(3, V, generator=torch.Generator().manual_seed(3))
    out = lp.TopPLogitsWarper(top_p)(torch.zeros(3, 1, dtype=torch.long), scores)
    kept = torch.isfinite(out)
    if top_p == 0.0:
        assert kept.sum(-1).tolist() == [1, 1, 1]
        assert torch.equal(out.argmax(-1), scores.argmax(-1))
    else:
        assert bool(kept.all())
