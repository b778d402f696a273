"""Generation engines behind one small interface, so the runner treats pyengine and its peers alike.

Each engine gets the same ModelSpec and the same prompt ids `[B, S]`, produces exactly `new_tokens`
new ids per row (EOS disabled through `min_new_tokens = max_new_tokens`, or the peer's equivalent) and
returns them as `[B, N]`, which the runner checks; so every engine does the same work.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from pyengine.bench.models import ModelSpec

STRATEGY_RE = re.compile(r"^(greedy|sample|beam(\d+))$")


class EngineUnavailable(Exception):
    """The engine cannot run here (package missing, no suitable model file); the message says why."""


def parse_strategy(strategy: str) -> dict[str, Any]:
    """`greedy`, `sample` (top_k=50, temperature 1: transformers' defaults) or `beamN` as generate() kwargs."""
    match = STRATEGY_RE.match(strategy)
    if match is None:
        raise ValueError(f"unknown strategy {strategy!r}; use greedy, sample or beamN (e.g. beam4)")
    if strategy == "greedy":
        return {"do_sample": False, "num_beams": 1}
    if strategy == "sample":
        return {"do_sample": True, "num_beams": 1, "top_k": 50, "top_p": 1.0, "temperature": 1.0}
    return {"do_sample": False, "num_beams": int(match.group(2))}


class Engine:
    """Base class: `load()`, then `generate(prompts, strategy, new_tokens, seed)` any number of times.

    Attributes describing the record: `name`, `framework`, `backend`, `quantized` (False or the format).
    """

    name = "engine"
    framework = "torch"
    backend = "torch"
    quantized: bool | str = False

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        self.spec = spec
        self.threads = threads

    def load(self) -> None:
        raise NotImplementedError

    def unsupported(self, strategy: str, batch: int) -> str | None:
        """None when this engine can run the configuration, else the reason it is skipped."""
        return None

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def impl(self) -> dict[str, str] | str:
        """The implementation per op (pyengine), or a one-line description (peers)."""
        return self.backend

    def weights(self) -> str:
        return self.spec.weights


class _TorchGenerateEngine(Engine):
    """Shared by pyengine and transformers: both expose transformers' `generate()` on torch tensors."""

    model: Any = None

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        import torch

        ids = torch.from_numpy(prompts)  # [B, S]
        torch.manual_seed(seed)
        out = self.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            pad_token_id=self.spec.pad_token_id, **parse_strategy(strategy),
        )  # [B, S + N]
        return out[:, prompts.shape[1]:].numpy()


class PyengineEngine(_TorchGenerateEngine):
    """pyengine's PyTorch models and decoding engine; a GGUF model is loaded from the GGUF, as the CLI does."""

    name = "pyengine"

    def __init__(self, spec: ModelSpec, threads: int, framework: str = "torch") -> None:
        super().__init__(spec, threads)
        if framework != "torch":
            raise EngineUnavailable(f"pyengine framework {framework!r} is not implemented yet (torch only)")

    def load(self) -> None:
        import os

        from pyengine.auto import AutoModelForCausalLM

        if self.spec.gguf:
            folder, name = os.path.split(self.spec.gguf)
            self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(self.spec.hf_dir)
        self.model.eval()

    def impl(self) -> dict[str, str]:
        import warnings

        from pyengine.backends.torch.backend import TorchBackend

        with warnings.catch_warnings():  # "cpp unavailable, using native" is recorded in the labels themselves
            warnings.simplefilter("ignore")
            return TorchBackend().ops.labels()


class TransformersEngine(_TorchGenerateEngine):
    """transformers' PyTorch `generate()` on the same float32 weights (the saved checkpoint)."""

    name = "transformers"
    backend = "transformers-pt"

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(self.spec.hf_dir, dtype=torch.float32).eval()

    def impl(self) -> str:
        return f"transformers {_version('transformers')} generate(), attn={self.model.config._attn_implementation}"


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def engine_names() -> tuple[str, ...]:
    from pyengine.bench import peers

    return ("pyengine", "transformers", *peers.PEERS)


def make_engine(name: str, spec: ModelSpec, threads: int, framework: str = "torch") -> Engine:
    """Instantiate an engine by name; raises EngineUnavailable (skip with a note) or ValueError (typo)."""
    from pyengine.bench import peers

    if name == "pyengine":
        return PyengineEngine(spec, threads, framework)
    if name == "transformers":
        return TransformersEngine(spec, threads)
    if name in peers.PEERS:
        return peers.PEERS[name](spec, threads)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(engine_names())}")
