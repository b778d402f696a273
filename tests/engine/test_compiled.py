"""The compiled loop (engine/compiled.py) against the eager loop (engine/loop.py), on the NumPy backend.

A fixed random "model" gives logits that depend on the last token and the position, so every processor
has something to do. Both loops must produce the same sequences and the same processed scores; the TF
and JAX backends are then checked against this same compiled loop in their own tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.backends.numpy.backend import NumpyBackend
from pyengine.engine import compiled, loop
from pyengine.engine import processors as P
from pyengine.engine.plan import DecodePlan, build_plan
from pyengine.generation_config import GenerationConfig

V, T = 23, 14
EOS, PAD = 5, 0
TABLE = np.random.default_rng(7).normal(size=(V, T + 1, V)).astype(np.float32) * 2.0  # [last, pos, V]


def eager_step(history: np.ndarray) -> np.ndarray:
    return TABLE[history[:, -1], history.shape[1]]


def compiled_step(state, next_tokens, cur):
    return TABLE[next_tokens, int(cur)], state


def both(cfg: GenerationConfig, prompt: list[list[int]], seed: int = 0):
    prompt = np.array(prompt)
    cfg.max_length = T
    plan = build_plan(cfg, vocab_size=V, prompt_length=prompt.shape[1], eos_token_ids=[EOS], pad_token_id=PAD)
    backend = NumpyBackend()
    eager = loop.run(plan, eager_step, backend, prompt, rng=np.random.default_rng(seed))
    comp = compiled.run_compiled(
        plan, backend, prompt, eager_step(prompt), None, compiled_step, rng=np.random.default_rng(seed)
    )
    return eager, comp


CONFIGS = {
    "greedy": dict(),
    "greedy+penalties": dict(repetition_penalty=1.6, no_repeat_ngram_size=2, bad_words_ids=[[3], [7, 8]]),
    "greedy+lengths": dict(min_length=9, forced_bos_token_id=4, forced_eos_token_id=6, remove_invalid_values=True),
    "greedy+min_new": dict(min_new_tokens=6, repetition_penalty=0.7),
    "sample": dict(do_sample=True, temperature=0.8, top_k=7, top_p=0.85),
    "sample+all": dict(do_sample=True, top_p=0.9, min_p=0.05, repetition_penalty=1.3, no_repeat_ngram_size=3,
                       bad_words_ids=[[2, 9]], min_length=8),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("prompt", [[[1, 2, 3]], [[0, 0, 4], [1, 9, 11], [12, 3, 3]]])
def test_compiled_equals_eager(name, prompt):
    eager, comp = both(GenerationConfig(**CONFIGS[name]), prompt, seed=3)
    n = eager.sequences.shape[1]
    assert int(comp.length) == n
    np.testing.assert_array_equal(comp.sequences[:, :n], eager.sequences)
    assert (comp.sequences[:, n:] == PAD).all()


def test_scores_buffer_matches_eager_scores():
    cfg = GenerationConfig(repetition_penalty=1.4, top_k=4, return_dict_in_generate=True, output_scores=True)
    eager, comp = both(cfg, [[1, 2], [3, 4]])
    steps = len(eager.scores)
    assert comp.scores.shape == (2, T - 2, V)
    np.testing.assert_array_equal(comp.scores[:, :steps], np.stack(eager.scores, axis=1))


def test_rows_finish_with_eos_and_get_pad():
    plan = DecodePlan("greedy", [], max_length=8, eos_token_ids=(EOS,), pad_token_id=PAD)

    def step(state, next_tokens, cur):  # row 0 says EOS at once, row 1 never
        logits = np.zeros((2, V), np.float32)
        logits[0, EOS] = logits[1, 1] = 1.0
        return logits, state

    first, _ = step(None, None, None)
    out = compiled.run_compiled(plan, NumpyBackend(), np.array([[3], [3]]), first, None, step)
    assert out.sequences.tolist() == [[3, EOS, PAD, PAD, PAD, PAD, PAD, PAD], [3, 1, 1, 1, 1, 1, 1, 1]]
    assert int(out.length) == 8


def test_what_needs_the_eager_loop_is_refused_clearly():
    plan = DecodePlan("greedy", [P.Custom(lambda t, s: s)], max_length=5)
    with pytest.raises(ValueError, match="user logits processors.*trace=False"):
        compiled.check_compilable(plan)
    with pytest.raises(ValueError, match="max_time"):
        compiled.check_compilable(DecodePlan("greedy", [], max_length=5, max_time=1.0))
    with pytest.raises(ValueError, match="random state"):
        compiled.run_compiled(DecodePlan("sample", [], max_length=5), NumpyBackend(), np.array([[1]]),
                              np.zeros((1, V), np.float32), None, compiled_step)
