"""The engine on every installed backend, driven by a scripted fake model.

The fake `step_fn` returns logits that put all mass on `script[row][cur_len]`, which makes the engine's
bookkeeping exact: EOS per row, padding after it, max length, early exit, min length, user criteria.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.engine import loop
from pyengine.engine import processors as P
from pyengine.engine.plan import DecodePlan, build_plan
from pyengine.generation_config import GenerationConfig
from tests.helpers import backends, make_backend, to_backend, to_numpy

V = 10
EOS, PAD = 9, 0


def scripted(name: str, script: list[list[int]]):
    table = np.array(script)

    def step(history):
        cur = history.shape[1]
        logits = np.full((table.shape[0], V), -5.0, np.float32)
        logits[np.arange(table.shape[0]), table[:, cur]] = 5.0
        logits[:, EOS] = np.where(table[:, cur] == EOS, 5.0, 1.0)  # EOS is always the runner-up
        return to_backend(name, logits)

    return step


def run(name, plan, prompt, script, **kw):
    backend = make_backend(name)
    return loop.run(plan, scripted(name, script), backend, to_backend(name, np.array(prompt)), **kw)


@pytest.mark.parametrize("name", backends())
def test_eos_per_row_pads_after_and_stops_early(name):
    script = [[0, 0, 3, 4, EOS, 5, 6, 7, 8, 1], [0, 0, 5, EOS, 6, 6, 6, 6, 6, 1]]
    plan = DecodePlan("greedy", [], max_length=10, eos_token_ids=(EOS,), pad_token_id=PAD)
    out = to_numpy(run(name, plan, [[1, 2], [1, 2]], script).sequences)
    assert out.tolist() == [[1, 2, 3, 4, EOS], [1, 2, 5, EOS, PAD]]


@pytest.mark.parametrize("name", backends())
def test_max_length_without_eos(name):
    script = [[0, 3, 4, 5, 6, 7, 8, 1, 2, 3]]
    plan = DecodePlan("greedy", [], max_length=6)
    assert to_numpy(run(name, plan, [[1]], script).sequences).tolist() == [[1, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("name", backends())
def test_min_length_defers_eos(name):
    script = [[0, EOS, EOS, EOS, EOS, EOS, EOS, EOS]]
    plan = DecodePlan("greedy", [P.MinLength(4, (EOS,))], max_length=8, eos_token_ids=(EOS,), pad_token_id=PAD)
    out = to_numpy(run(name, plan, [[1]], script).sequences).tolist()[0]
    assert EOS not in out[:4] and out[4] == EOS and len(out) == 5


@pytest.mark.parametrize("name", backends())
def test_scores_are_kept_per_step(name):
    script = [[0, 3, 4, 5, 6, 7]]
    plan = DecodePlan("greedy", [P.Temperature(2.0)], max_length=5, output_scores=True, output_logits=True)
    res = run(name, plan, [[1]], script)
    assert len(res.scores) == 4 and len(res.logits) == 4
    np.testing.assert_allclose(to_numpy(res.scores[0]), to_numpy(res.logits[0]) / 2.0)


@pytest.mark.parametrize("name", backends())
def test_user_stopping_criterion_finishes_rows(name):
    script = [[0, 3, 4, 5, 6, 7, 8, 1], [0, 3, 4, 5, 6, 7, 8, 1]]

    def stop_after_5(tokens, scores):
        return to_numpy(tokens)[:, -1] == 5 if name == "numpy" else tokens[:, -1] == 5

    plan = DecodePlan("greedy", [], max_length=8, stopping=[stop_after_5])
    assert to_numpy(run(name, plan, [[1], [1]], script).sequences).shape == (2, 4)


@pytest.mark.parametrize("name", backends())
def test_sampling_only_draws_allowed_tokens(name):
    """With top-k=2 over scripted logits, every draw is the scripted token or EOS (the runner-up)."""
    script = [[0] + [3] * 20] * 8
    plan = DecodePlan("sample", [P.TopK(2)], max_length=20)
    rng = np.random.default_rng(0) if name == "numpy" else None
    out = to_numpy(run(name, plan, [[1]] * 8, script, rng=rng).sequences)[:, 1:]
    assert set(np.unique(out)) <= {3, EOS}


def test_plan_rejects_out_of_vocab_ids():
    cfg = GenerationConfig(bad_words_ids=[[3], [V + 5]], max_length=5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        build_plan(cfg, vocab_size=V, prompt_length=1, eos_token_ids=[EOS], pad_token_id=PAD)
    # EOS outside the vocabulary is accepted, as in transformers (it can never be produced).
    build_plan(GenerationConfig(), vocab_size=V, prompt_length=1, eos_token_ids=[V], pad_token_id=PAD)


def test_plan_needs_pad_with_eos():
    with pytest.raises(ValueError, match="pad_token_id"):
        DecodePlan("greedy", [], max_length=5, eos_token_ids=(EOS,))


def test_plan_order_follows_transformers():
    cfg = GenerationConfig(
        do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2,
        no_repeat_ngram_size=2, bad_words_ids=[[4]], min_length=3,
    )
    plan = build_plan(cfg, vocab_size=V, prompt_length=1, eos_token_ids=[EOS], pad_token_id=PAD)
    names = [type(p).__name__ for p in plan.processors]
    assert names == ["RepetitionPenalty", "NoRepeatNGram", "BadWords", "MinLength", "Temperature", "TopK", "TopP", "MinP"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"bad_words_ids": [[]]}, "bad_words_ids"),
        ({"num_beams": 0}, "num_beams"),
    ],
)
def test_generation_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**kwargs)


def test_fuse_greedy_only_when_equivalent():
    from pyengine.engine.plan import fuse_greedy

    def plan(*specs, **kw):
        return DecodePlan("greedy", list(specs), max_length=5, eos_token_ids=(EOS,), pad_token_id=PAD, **kw)

    fused = fuse_greedy(plan(P.RepetitionPenalty(1.3), P.BadWords(((4,), (6,))), P.MinLength(3, (EOS,))))
    assert fused == P.FusedArgmax(1.3, 3, (EOS,), (4, 6))
    assert fuse_greedy(plan(P.NoRepeatNGram(2))) is None
    assert fuse_greedy(plan(P.BadWords(((4, 5),)))) is None
    assert fuse_greedy(plan(P.RepetitionPenalty(1.3), output_scores=True)) is None


@pytest.mark.parametrize("name", backends())
def test_fused_greedy_equals_the_processor_chain(name):
    """Random logits over many steps: the fused selection picks exactly the chain's argmax."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((64, V)).astype(np.float32)

    def step(history):
        h = to_numpy(history)
        return to_backend(name, table[(h.sum(axis=1) * 7 + h.shape[1]) % 64])

    specs = [P.RepetitionPenalty(1.7), P.BadWords(((2,), (5,))), P.MinLength(6, (EOS,))]
    prompt = to_backend(name, np.array([[1, 3], [4, 4], [7, 8]]))
    outs = []
    for fused in (False, True):
        plan = DecodePlan("greedy", specs, max_length=12, eos_token_ids=(EOS,), pad_token_id=PAD)
        if fused:
            from pyengine.engine.plan import fuse_greedy

            plan.fused_select = fuse_greedy(plan)
            assert plan.fused_select is not None
        outs.append(to_numpy(loop.run(plan, step, make_backend(name), prompt).sequences))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_top_logits_needed_follows_the_processors():
    from pyengine.engine.plan import top_logits_needed

    def plan(strategy, *specs, **kw):
        return DecodePlan(strategy, list(specs), max_length=5, **kw)

    assert top_logits_needed(plan("greedy")) == 1
    assert top_logits_needed(plan("greedy", P.Temperature(0.5), P.TopK(3))) == 1  # argmax-invariant warpers
    assert top_logits_needed(plan("greedy", P.RepetitionPenalty(1.2))) is None  # may lift a lower logit
    assert top_logits_needed(plan("greedy", P.NoRepeatNGram(2))) is None
    # Each ban may remove one of the top tokens: one more per EOS id and per bad word.
    bans = (P.MinNewTokens(2, 4, (EOS, 3)), P.BadWords(((2,), (4, 6))), P.ForcedEOS(5, (EOS,)))
    assert top_logits_needed(plan("greedy", *bans)) == 1 + 2 + 2
    assert top_logits_needed(plan("sample", P.MinLength(4, (EOS,)), P.Temperature(0.7), P.TopK(5))) == 6
    assert top_logits_needed(plan("greedy", output_scores=True)) is None
    assert top_logits_needed(plan("greedy", output_logits=True)) is None
    assert top_logits_needed(plan("sample", P.Temperature(0.7), P.TopK(5), P.TopP(0.9), P.MinP(0.1))) == 5
    assert top_logits_needed(plan("sample", P.TopK(5, min_tokens_to_keep=8))) == 8
    assert top_logits_needed(plan("sample", P.TopP(0.9))) is None  # needs the whole distribution
    assert top_logits_needed(plan("sample", P.TopP(0.9), P.TopK(5))) is None
    assert top_logits_needed(plan("sample", P.RepetitionPenalty(1.2), P.TopK(5))) is None
    assert top_logits_needed(plan("sample", P.TopK(5), P.Custom(lambda t, s: s))) is None
    cfg = GenerationConfig(do_sample=True, top_k=4, temperature=0.8)
    assert build_plan(cfg, vocab_size=V, prompt_length=1, eos_token_ids=[], pad_token_id=None).top_logits == 4
    beam = GenerationConfig(num_beams=2)
    assert build_plan(beam, vocab_size=V, prompt_length=1, eos_token_ids=[], pad_token_id=None, num_beams=2).top_logits is None


@pytest.mark.parametrize("name", backends())
@pytest.mark.parametrize("specs", [[], [P.Temperature(0.6), P.TopK(3)], [P.TopK(4), P.Temperature(1.3), P.TopP(0.7)],
                                   [P.Temperature(0.9), P.TopK(2, min_tokens_to_keep=3), P.MinP(0.2)],
                                   [P.MinLength(9, (EOS,)), P.BadWords(((2,), (4, 6))), P.Temperature(0.8), P.TopK(2)]])  # fmt: skip
def test_steps_holding_only_the_top_logits_give_the_same_tokens(name, specs):
    """What `plan.top_logits` promises: a step that keeps each row's k largest logits (ties too) and -inf
    elsewhere leaves greedy and sampled tokens unchanged, draw for draw."""
    from pyengine.engine.plan import top_logits_needed

    rng = np.random.default_rng(11)
    table = rng.standard_normal((64, V)).astype(np.float32)
    table[:, 5] = table[:, 6]  # ties, some of them at the k-th place

    def step_fn(k):
        def step(history):
            h = to_numpy(history)
            logits = table[(h.sum(axis=1) * 7 + h.shape[1]) % 64].copy()
            if k is not None:
                kth = np.sort(logits, axis=1)[:, -k][:, None]
                logits[logits < kth] = -np.inf
            return to_backend(name, logits)

        return step

    prompt = np.array([[1, 3], [4, 4], [7, 8]])
    for strategy in ("greedy", "sample"):
        plan = DecodePlan(strategy, list(specs), max_length=14)
        k = top_logits_needed(plan)
        if not specs and strategy == "sample":
            assert k is None  # plain sampling draws from every token
            continue
        outs = []
        for keep in (None, k):
            if name == "torch":
                import torch

                torch.manual_seed(3)
            rng_draw = np.random.default_rng(3) if name == "numpy" else None
            result = loop.run(plan, step_fn(keep), make_backend(name), to_backend(name, prompt), rng=rng_draw)
            outs.append(to_numpy(result.sequences))
        np.testing.assert_array_equal(outs[0], outs[1])
