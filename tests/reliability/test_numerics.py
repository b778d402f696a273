"""NaN / inf logits and fully banned vocabularies: what generate() does, for each strategy.

Defined behaviour (also in the README's Reliability table):
- `remove_invalid_values=True`: NaN becomes 0 and +inf the dtype's max before any other processing, so
  every strategy runs; a NaN token then scores like a logit of 0, a +inf token always wins.
- Without it, greedy and beam search never raise: `torch.argmax` counts NaN as the largest score (so a
  NaN token is picked, as in transformers) and the output keeps its documented shape. Sampling and beam
  sampling raise a ValueError naming `remove_invalid_values` instead of torch.multinomial's RuntimeError.
- Every token banned (-inf everywhere): greedy picks id 0 (argmax of equal scores); sampling raises the
  same ValueError. Single-token bad words never ban EOS (transformers' rule), so "ban the whole vocabulary"
  leaves EOS, and generation ends right away.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pyengine.generation.logits_process import LogitsProcessor, LogitsProcessorList  # noqa: E402
from tests.reliability._models import EOS, VOCAB, tiny_model  # noqa: E402

STRATEGIES = {
    "greedy": {},
    "sample": {"do_sample": True},
    "beam": {"num_beams": 2},
    "beam_sample": {"num_beams": 2, "do_sample": True},
}
TOKEN = 7  # the poisoned vocabulary entry
PROMPT = torch.tensor([[5, 9, 11], [12, 13, 14]])
NO_EOS = {"eos_token_id": VOCAB + 1, "pad_token_id": 0}  # an EOS that can never be produced: fixed lengths


def _poison(kind: str):
    def poison(logits: torch.Tensor) -> torch.Tensor:  # [B, S, V]
        if kind == "nan_one":
            logits[..., TOKEN] = float("nan")
        elif kind == "pos_inf_one":
            logits[..., TOKEN] = float("inf")
        elif kind == "zero_one":
            logits[..., TOKEN] = 0.0
        elif kind == "all_nan":
            logits[:] = float("nan")
        elif kind == "all_neg_inf":
            logits[:] = -float("inf")
        return logits

    return poison


def _generate(kind: str, strategy: str, **kw):
    model = tiny_model("poisoned_gpt2")
    model.poison = _poison(kind)
    try:
        torch.manual_seed(0)
        return model.generate(PROMPT, max_new_tokens=4, **STRATEGIES[strategy], **NO_EOS, **kw)
    finally:
        model.poison = None


def _assert_valid(out: torch.Tensor, rows: int = 2) -> None:
    assert out.dtype == torch.int64 and out.shape[0] == rows and 3 < out.shape[1] <= 7
    assert bool(((out >= 0) & (out < VOCAB)).all())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("kind", ["nan_one", "pos_inf_one", "all_nan"])
def test_invalid_values_removed_every_strategy_runs(kind, strategy):
    _assert_valid(_generate(kind, strategy, remove_invalid_values=True))


def test_removed_nan_scores_like_zero_and_inf_always_wins():
    cleaned = _generate("nan_one", "greedy", remove_invalid_values=True)
    assert torch.equal(cleaned, _generate("zero_one", "greedy", remove_invalid_values=True))
    forced = _generate("pos_inf_one", "greedy", remove_invalid_values=True)
    assert bool((forced[:, 3:] == TOKEN).all())


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("kind", ["nan_one", "pos_inf_one", "all_nan", "all_neg_inf"])
def test_without_removal_argmax_strategies_still_return_ids(kind, strategy):
    out = _generate(kind, strategy)
    assert out.dtype == torch.int64 and out.shape[0] == 2 and out.shape[1] > 3
    assert bool(((out >= 0) & (out < VOCAB)).all())


def test_without_removal_greedy_picks_the_nan_token():
    """torch.argmax treats NaN as the maximum: the same tokens transformers' greedy search produces."""
    out = _generate("nan_one", "greedy")
    assert bool((out[:, 3:] == TOKEN).all())


@pytest.mark.parametrize("strategy", ["sample", "beam_sample"])
@pytest.mark.parametrize("kind", ["nan_one", "pos_inf_one", "all_nan", "all_neg_inf"])
def test_without_removal_sampling_raises_a_clear_error(kind, strategy):
    """Regression: this surfaced as torch.multinomial's "probability tensor contains either `inf`, `nan` or
    element < 0" RuntimeError; it is now a ValueError saying what to pass."""
    with pytest.raises(ValueError, match="remove_invalid_values"):
        _generate(kind, strategy)


def test_removal_makes_all_neg_inf_rows_samplable_like_transformers():
    """Regression: inf_nan_remove kept -inf (transformers 4.6 behaviour); 4.57 maps it to finfo.min, so an
    all -inf row samples uniformly instead of failing."""
    _assert_valid(_generate("all_neg_inf", "sample", remove_invalid_values=True))


# -- every token banned ------------------------------------------------------------------------------


class _BanAll(LogitsProcessor):
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(scores, -float("inf"))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_bad_words_over_the_whole_vocabulary_leave_only_eos(strategy):
    model = tiny_model("gpt2")
    out = model.generate(
        PROMPT, max_new_tokens=4, bad_words_ids=[[t] for t in range(VOCAB)], **STRATEGIES[strategy]
    )
    assert out.shape[1] == 4 and bool((out[:, 3] == EOS).all()), out


def test_every_token_banned_greedy_picks_id_zero():
    model = tiny_model("gpt2")
    kw = {"max_new_tokens": 3, "logits_processor": LogitsProcessorList([_BanAll()]), **NO_EOS}
    assert bool((model.generate(PROMPT, **kw)[:, 3:] == 0).all())
    only_eos = {"bad_words_ids": [[t] for t in range(VOCAB)], "min_length": 6, "max_new_tokens": 3}
    assert bool((model.generate(PROMPT, **only_eos)[:, 3:] == 0).all()), "min_length bans EOS: nothing left"


@pytest.mark.parametrize("strategy", ["sample", "beam_sample"])
def test_every_token_banned_sampling_raises_a_clear_error(strategy):
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="every token filtered"):
        model.generate(PROMPT, max_new_tokens=3, logits_processor=LogitsProcessorList([_BanAll()]),
                       **STRATEGIES[strategy], **NO_EOS)  # fmt: skip


def test_top_p_zero_samples_the_greedy_tokens_and_one_is_a_no_op():
    model = tiny_model("llama")
    greedy = model.generate(PROMPT, max_new_tokens=5, **NO_EOS)
    assert torch.equal(
        model.generate(PROMPT, max_new_tokens=5, do_sample=True, top_p=0.0, top_k=0, **NO_EOS), greedy
    )
    torch.manual_seed(3)
    one = model.generate(PROMPT, max_new_tokens=5, do_sample=True, top_p=1.0, **NO_EOS)
    torch.manual_seed(3)
    default = model.generate(PROMPT, max_new_tokens=5, do_sample=True, **NO_EOS)
    assert torch.equal(one, default)
