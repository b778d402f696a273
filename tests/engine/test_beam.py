"""Beam search on every installed backend with a fake model whose logits depend only on the history.

The NumPy backend is the oracle: torch must produce the same beams, scores and indices. Also checks the
bookkeeping by hand on a tiny case where the best hypothesis is known.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyengine.engine.beam_search import run_beam
from pyengine.engine.plan import DecodePlan
from tests.helpers import backends, has, make_backend, to_backend, to_numpy

V = 13


def hashed_model(name: str):
    """Logits = a fixed random table indexed by (last token, length): deterministic, tie-free."""
    table = np.random.default_rng(3).standard_normal((V, 64, V)).astype(np.float32) * 2

    def step(history):
        h = to_numpy(history)
        return to_backend(name, table[h[:, -1], h.shape[1]])

    return step


def beam(name, **kw):
    plan = DecodePlan("greedy", [], max_length=kw.pop("max_length", 9), eos_token_ids=(3,), pad_token_id=0,
                      output_scores=True)
    prompt = np.repeat(np.array([[1, 2], [4, 5]]), kw["num_beams"], axis=0)
    return run_beam(plan, hashed_model(name), make_backend(name), to_backend(name, prompt), length_penalty=1.0,
                    early_stopping=kw.pop("early_stopping", False), **kw)


@pytest.mark.skipif(not has("torch"), reason="torch not installed")
@pytest.mark.parametrize("kw", [{"num_beams": 2, "num_return_sequences": 1}, {"num_beams": 4, "num_return_sequences": 3},
                                {"num_beams": 3, "num_return_sequences": 2, "early_stopping": True}])
def test_torch_beam_equals_numpy_reference(kw):
    ref, got = beam("numpy", **dict(kw)), beam("torch", **dict(kw))
    np.testing.assert_array_equal(to_numpy(got.sequences), ref.sequences)
    np.testing.assert_array_equal(to_numpy(got.beam_indices), ref.beam_indices)
    np.testing.assert_allclose(to_numpy(got.sequences_scores), ref.sequences_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", backends())
def test_single_beam_is_greedy_on_log_probs(name):
    """With one beam, beam search must pick the argmax at every step, like greedy search."""
    res = beam(name, num_beams=1, num_return_sequences=1)
    seq = to_numpy(res.sequences)
    step = hashed_model("numpy")
    for row in range(seq.shape[0]):
        for t in range(2, seq.shape[1]):
            logits = step(seq[row : row + 1, :t])
            assert seq[row, t] == int(np.argmax(logits)), (row, t)
            if seq[row, t] == 3:
                break


@pytest.mark.parametrize("name", backends())
def test_scores_are_length_normalised_log_probs(name):
    res = beam(name, num_beams=2, num_return_sequences=1, max_length=6)
    seq, score = to_numpy(res.sequences)[0], float(to_numpy(res.sequences_scores)[0])
    step = hashed_model("numpy")
    total, n = 0.0, 0
    for t in range(2, len(seq)):
        logits = step(seq[None, :t]).astype(np.float64)[0]
        total += logits[seq[t]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        n += 1
        if seq[t] == 3:
            break
    assert score == pytest.approx(total / n, rel=1e-4)
