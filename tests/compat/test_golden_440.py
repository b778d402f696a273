"""Replay golden files written by transformers 4.40.2 (tools/golden/make_golden_440.py) on pyengine.

4.57 no longer runs these features locally: group beam search through generate(), and the public
per-strategy methods (greedy_search, sample, beam_search, beam_sample, group_beam_search). The
checkpoints were written by 4.40; tokens must match exactly, scores within 1e-5.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyengine  # noqa: E402
from pyengine import (  # noqa: E402
    AutoModelForCausalLM,
    BeamSearchScorer,
    LogitsProcessorList,
    MaxLengthCriteria,
    StoppingCriteriaList,
)

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "golden440"
FAMILIES = ["gpt2", "llama"]


def _load(family):
    meta = json.loads((ASSETS / family / "cases.json").read_text())
    scores = np.load(ASSETS / family / "scores.npz")
    return meta, scores


def _cases():
    out = []
    for family in FAMILIES:
        meta, _ = _load(family)
        out += [pytest.param(family, case["id"], id=f"{family}-{case['id']}") for case in meta["cases"]]
    return out


@pytest.fixture(scope="module")
def models():
    return {family: AutoModelForCausalLM.from_pretrained(ASSETS / family) for family in FAMILIES}


def _processors(specs):
    return LogitsProcessorList([getattr(pyengine, name)(*args) for name, args in specs])


def _run(model, case, ids, mask):
    if case.get("seed") is not None:
        torch.manual_seed(case["seed"])
    if case["method"] == "generate":
        return model.generate(input_ids=ids, attention_mask=mask, **case["kwargs"])
    expand = case.get("expand", 1)
    kwargs = dict(case["kwargs"])
    kwargs["logits_processor"] = _processors(case.get("processors", []))
    if "warpers" in case:
        kwargs["logits_warper"] = _processors(case["warpers"])
    kwargs["stopping_criteria"] = StoppingCriteriaList([MaxLengthCriteria(max_length=case["max_length"])])
    if "scorer" in case:
        kwargs["beam_scorer"] = BeamSearchScorer(device="cpu", **case["scorer"])
    method = getattr(model, case["method"])
    return method(ids.repeat_interleave(expand, 0), attention_mask=mask.repeat_interleave(expand, 0), **kwargs)


@pytest.mark.parametrize("family,case_id", _cases())
def test_golden_case(models, family, case_id):
    meta, scores = _load(family)
    case = next(c for c in meta["cases"] if c["id"] == case_id)
    ids, mask = torch.tensor(meta["input_ids"]), torch.tensor(meta["attention_mask"])
    out = _run(models[family], case, ids, mask)
    want = case["expected"]
    assert out.sequences.tolist() == want["sequences"], f"\n4.40: {want['sequences']}\nours: {out.sequences.tolist()}"
    if "sequences_scores" in want:
        np.testing.assert_allclose(out.sequences_scores.numpy(), want["sequences_scores"], atol=1e-5, rtol=1e-5)
    if "beam_indices" in want:
        assert out.beam_indices.tolist() == want["beam_indices"]
    got_scores = torch.stack(out.scores).numpy()
    np.testing.assert_allclose(got_scores, scores[case_id], atol=1e-5, rtol=1e-5)


def test_beam_methods_need_a_max_length(models):
    """Without a MaxLengthCriteria the reference's default (generation_config.max_length) applies; with none
    at all the call fails before any model step."""
    model = models["gpt2"]
    scorer = BeamSearchScorer(batch_size=1, num_beams=2, device="cpu")
    out = model.beam_search(torch.tensor([[5, 6], [5, 6]]), scorer, pad_token_id=0)
    assert out.shape[1] <= model.generation_config.max_length
    model.generation_config.max_length = None
    try:
        with pytest.raises(ValueError, match="MaxLengthCriteria"):
            model.beam_search(torch.tensor([[5, 6], [5, 6]]), BeamSearchScorer(1, 2, "cpu"), pad_token_id=0)
    finally:
        model.generation_config.max_length = 20


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_beams": 4, "num_beam_groups": 3, "diversity_penalty": 1.0}, "divisible"),
        ({"num_beams": 2, "num_beam_groups": 4, "diversity_penalty": 1.0}, "divisible"),
        ({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "do_sample": True}, "sampling mode"),
        ({"num_beams": 4, "num_beam_groups": 2}, "diversity_penalty"),
    ],
)
def test_group_beam_argument_errors(models, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models["gpt2"].generate(torch.tensor([[5, 6]]), max_new_tokens=3, **kwargs)


def test_scorer_argument_errors():
    with pytest.raises(ValueError, match="strictly greater than 1"):
        BeamSearchScorer(batch_size=1, num_beams=1, device="cpu")
    with pytest.raises(ValueError, match="divisible"):
        BeamSearchScorer(batch_size=1, num_beams=4, device="cpu", num_beam_groups=3)
