"""The Triton kernels inside generate(): forced with PYENGINE_IMPL_<OP>=triton (interpreter), the tokens equal
the ones the default implementation (cpp / native) gives for the same seeds, and the kernels really ran."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_gpt2():
    from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def kernel_calls(monkeypatch):
    from pyengine.backends.torch import triton

    calls: list[str] = []
    real = triton._kernels

    def spy(name: str):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(triton, "_kernels", spy)
    return calls


def test_seeded_sampling_with_triton_draws_the_default_tokens(tiny_gpt2, monkeypatch, kernel_calls):
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    kw = dict(do_sample=True, max_new_tokens=5, top_k=20, top_p=0.9, temperature=0.8, repetition_penalty=1.3,
              pad_token_id=0, seed=[3, 4])
    want = tiny_gpt2.generate(ids, **kw)
    monkeypatch.setenv("PYENGINE_IMPL_FUSED_SAMPLE", "triton")
    got = tiny_gpt2.generate(ids, **kw)
    assert "sampling" in kernel_calls
    assert torch.equal(got, want)


def test_greedy_with_triton_processors_matches_default(tiny_gpt2, monkeypatch, kernel_calls):
    ids = torch.tensor([[5, 6, 5, 6, 5]])
    kw = dict(do_sample=False, max_new_tokens=6, no_repeat_ngram_size=2, repetition_penalty=1.5,
              bad_words_ids=[[7], [6, 9]], pad_token_id=0)
    want = tiny_gpt2.generate(ids, **kw)
    for op in ("NO_REPEAT_NGRAM", "REPETITION_PENALTY", "BAD_WORDS", "ARGMAX", "FUSED_ARGMAX"):
        monkeypatch.setenv(f"PYENGINE_IMPL_{op}", "triton")
    got = tiny_gpt2.generate(ids, **kw)
    assert {"penalties", "sampling"} <= set(kernel_calls), kernel_calls
    assert torch.equal(got, want)
