"""Tiny random GPT-2 / LLaMA checkpoints saved in transformers' format and loaded back, plus a toy tokenizer.

Sizes: 2 layers, hidden 64, 4 heads (LLaMA: 2 KV heads), vocab 256, 256 positions; seeded. EOS is id 2.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

VOCAB = 256
EOS = 2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread. On a shared 2-core machine, OpenMP threads spinning against other processes
    make a 64-wide matmul 40x slower than running it on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _build(family: str) -> Any:
    torch.manual_seed(0)
    if family == "gpt2":
        from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                            bos_token_id=1, eos_token_id=EOS)  # fmt: skip
        return GPT2LMHeadModel(config)
    from pyengine.models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=EOS)  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny model round-tripped through `save_pretrained` / `AutoModelForCausalLM.from_pretrained`."""
    from pyengine.auto import AutoModelForCausalLM

    path = tmp_path_factory.mktemp(request.param)
    _build(request.param).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(str(path)).eval()


class ByteTokenizer:
    """Token id = byte value + 3 (0 pad, 1 bos, 2 eos): enough for stop strings and text output."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, EOS

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8") if b + 3 < VOCAB]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        data = bytes(i - 3 for i in ids if i >= 3)
        return data.decode("utf-8", errors="replace")


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()


def random_prompts(n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    """`n` prompts of random lengths in [lo, hi] with ids in [3, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (length,), generator=g).tolist() for length in lengths]
