"""The engine's compiled loop (engine/compiled.py) on the JAX backend under jax.jit, against the NumPy
eager loop (greedy: same tokens) and the JAX eager loop (sampling: same tokens for one PRNG key).

A fixed random "model" gives logits that depend on the last token and the position, so every processor
has something to do (the same table as tests/engine/test_compiled.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyengine.backends.jax.backend import JaxBackend, KeyStream
from pyengine.backends.numpy.backend import NumpyBackend
from pyengine.engine import compiled, loop
from pyengine.engine.plan import build_plan
from pyengine.generation_config import GenerationConfig

V, T = 23, 14
EOS, PAD = 5, 0
TABLE = np.random.default_rng(7).normal(size=(V, T + 1, V)).astype(np.float32) * 2.0  # [last, pos, V]

CONFIGS = {
    "greedy": dict(),
    "greedy+penalties": dict(repetition_penalty=1.6, no_repeat_ngram_size=2, bad_words_ids=[[3], [7, 8]]),
    "greedy+lengths": dict(min_length=9, forced_bos_token_id=4, forced_eos_token_id=6, remove_invalid_values=True),
    "sample": dict(do_sample=True, temperature=0.8, top_k=7, top_p=0.85),
    "sample+all": dict(do_sample=True, top_p=0.9, min_p=0.05, repetition_penalty=1.3, no_repeat_ngram_size=3,
                       bad_words_ids=[[2, 9]], min_length=8),
}
PROMPT = [[0, 0, 4], [1, 9, 11], [12, 3, 3]]  # a left-padded batch


def _plan(name, prompt):
    cfg = GenerationConfig(**CONFIGS[name])
    cfg.max_length = T
    plan = build_plan(cfg, vocab_size=V, prompt_length=prompt.shape[1], eos_token_ids=[EOS], pad_token_id=PAD)
    plan.fused_select = None
    return plan


def _compiled(plan, prompt, key):
    table = jnp.asarray(TABLE)

    @jax.jit
    def run(prompt, key):
        step = lambda state, tokens, cur: (table[tokens, cur], state)  # noqa: E731
        first = table[prompt[:, -1], prompt.shape[1]]
        result = compiled.run_compiled(plan, JaxBackend(), prompt, first, jnp.zeros(()), step, rng=key)
        return result.sequences, result.length

    return run(jnp.asarray(prompt, dtype=jnp.int32), key)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jax_compiled_loop(name):
    prompt = np.array(PROMPT)
    plan = _plan(name, prompt)
    key = jax.random.PRNGKey(11)
    sequences, length = _compiled(plan, prompt, key)
    step = lambda history: TABLE[history[:, -1], history.shape[1]]  # noqa: E731
    if plan.strategy == "greedy":
        eager = loop.run(plan, step, NumpyBackend(), prompt)
    else:
        eager = loop.run(plan, lambda h: jnp.asarray(step(np.asarray(h))), JaxBackend(eager=True), prompt,
                         rng=KeyStream(key))  # fmt: skip
    n = eager.sequences.shape[1]
    assert int(length) == n
    np.testing.assert_array_equal(np.asarray(sequences)[:, :n], np.asarray(eager.sequences))
    np.testing.assert_array_equal(np.asarray(sequences)[:, n:], PAD)
