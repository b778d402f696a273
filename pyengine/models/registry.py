"""The model table: `model_type` (from config.json) → config class and model classes, as import paths.

A literal dict, read top to bottom; nothing registers itself at import time. Paths are imported on
first use so that reading a config never imports torch. `pyengine.auto` is the only user.
"""

from __future__ import annotations

import importlib
from typing import Any

# model_type → (config class, {task: model class})
MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "bert": (
        "pyengine.models.bert.config.BertConfig",
        {
            "base": "pyengine.models.bert.modeling_torch.BertModel",
        },
    ),
    "gpt2": (
        "pyengine.models.gpt2.config.GPT2Config",
        {
            "base": "pyengine.models.gpt2.modeling_torch.GPT2Model",
            "causal_lm": "pyengine.models.gpt2.modeling_torch.GPT2LMHeadModel",
        },
    ),
    "llama": (
        "pyengine.models.llama.config.LlamaConfig",
        {
            "base": "pyengine.models.llama.modeling_torch.LlamaModel",
            "causal_lm": "pyengine.models.llama.modeling_torch.LlamaForCausalLM",
        },
    ),
    "t5": (
        "pyengine.models.t5.config.T5Config",
        {
            "base": "pyengine.models.t5.modeling_torch.T5Model",
            "seq2seq_lm": "pyengine.models.t5.modeling_torch.T5ForConditionalGeneration",
            "encoder": "pyengine.models.t5.modeling_torch.T5EncoderModel",
        },
    ),
}


def supported_model_types() -> list[str]:
    return sorted(MODELS)


def _check(model_type: str | None) -> tuple[str, dict[str, str]]:
    if model_type not in MODELS:
        raise ValueError(
            f"Unrecognized model_type {model_type!r}; pyengine supports: {', '.join(supported_model_types())}. "
            "Check the `model_type` field of config.json."
        )
    return MODELS[model_type]


def import_object(path: str) -> Any:
    """`"package.module.Name"` → the object."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def config_class(model_type: str | None) -> Any:
    """The config class for `model_type`; ValueError listing the supported types otherwise."""
    return import_object(_check(model_type)[0])


def model_class(model_type: str | None, task: str) -> Any:
    """The model class for `model_type` and `task` ("base" or "causal_lm")."""
    classes = _check(model_type)[1]
    if task not in classes:
        raise ValueError(f"{model_type} has no {task!r} model; available: {sorted(classes)}.")
    return import_object(classes[task])
