"""The real SmolLM2-135M-Instruct (GGUF): BatchGenerator's greedy tokens equal generate()'s per prompt."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pyengine import cli  # noqa: E402
from pyengine.batch import BatchGenerator, Request  # noqa: E402

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a little"]


def test_batch_greedy_equals_generate_on_smollm2():
    model, tok = cli.load(cli.default_model_path())
    # Two rows at a time and 8-token blocks: the third prompt waits for a free row, blocks are reused.
    gen = BatchGenerator(model, tok, max_batch_size=2, block_size=8, kv_cache_bytes=64 << 20)
    results = gen.run([Request(p, max_new_tokens=16) for p in PROMPTS])
    for prompt, result in zip(PROMPTS, results):
        ids = torch.tensor([tok.encode(prompt)])
        ref = model.generate(ids, max_new_tokens=16, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = ref[0, ids.shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id) + 1]
        assert result.token_ids == new, f"{prompt!r}: {tok.decode(result.token_ids)!r} vs {tok.decode(new)!r}"
    assert "Paris" in results[0].text
