"""Flax auto classes: `model_type` (config.json) → the Flax model class (transformers' `FlaxAutoModel`,
`FlaxAutoModelForCausalLM`, `FlaxAutoModelForSeq2SeqLM`), through the literal table below.

Example:
    >>> model = FlaxAutoModelForCausalLM.from_pretrained("path/to/checkpoint")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from pyengine.configuration_utils import PretrainedConfig
from pyengine.models import registry

# model_type → {task: Flax class}; imported on first use.
FLAX_MODELS: dict[str, dict[str, str]] = {
    "bert": {"base": "pyengine.models.bert.modeling_flax.FlaxBertModel"},
    "gpt2": {
        "base": "pyengine.models.gpt2.modeling_flax.FlaxGPT2Model",
        "causal_lm": "pyengine.models.gpt2.modeling_flax.FlaxGPT2LMHeadModel",
    },
    "llama": {
        "base": "pyengine.models.llama.modeling_flax.FlaxLlamaModel",
        "causal_lm": "pyengine.models.llama.modeling_flax.FlaxLlamaForCausalLM",
    },
    "t5": {
        "base": "pyengine.models.t5.modeling_flax.FlaxT5Model",
        "seq2seq_lm": "pyengine.models.t5.modeling_flax.FlaxT5ForConditionalGeneration",
    },
}

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "use_auth_token", "revision",
               "proxies", "subfolder", "resume_download", "_commit_hash")  # fmt: skip


class _BaseFlaxAutoModel:
    _task: str = ""

    def __init__(self) -> None:
        raise OSError(f"{type(self).__name__} is designed to be instantiated using "
                      f"`{type(self).__name__}.from_pretrained(path)` or `.from_config(config)`.")  # fmt: skip

    @classmethod
    def model_class_for(cls, config: PretrainedConfig) -> Any:
        model_type = getattr(config, "model_type", None)
        classes = FLAX_MODELS.get(model_type)
        if classes is None:
            raise ValueError(f"Unrecognized model_type {model_type!r} for Flax; supported: {sorted(FLAX_MODELS)}.")
        if cls._task not in classes:
            raise ValueError(f"{model_type} has no Flax {cls._task!r} model; available: {sorted(classes)}.")
        return registry.import_object(classes[cls._task])

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> Any:
        """A randomly initialised model of the config's type (`seed=`, `dtype=` optional)."""
        return cls.model_class_for(config)(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any) -> Any:
        """Load the config (overridden by matching kwargs), pick the Flax class, then its `from_pretrained`."""
        from pyengine.auto import AutoConfig

        config = kwargs.pop("config", None)
        hub = {name: kwargs.pop(name) for name in _HUB_KWARGS if name in kwargs}
        if not isinstance(config, PretrainedConfig):
            dtype = kwargs.pop("dtype", None)
            source = config if config is not None else pretrained_model_name_or_path
            config, kwargs = AutoConfig.from_pretrained(source, return_unused_kwargs=True, **dict(hub), **kwargs)
            if dtype is not None:
                kwargs["dtype"] = dtype
        return cls.model_class_for(config).from_pretrained(pretrained_model_name_or_path, *model_args, config=config,
                                                           **hub, **kwargs)  # fmt: skip


class FlaxAutoModel(_BaseFlaxAutoModel):
    """The base model: `FlaxGPT2Model`, `FlaxLlamaModel`, `FlaxBertModel`, `FlaxT5Model`."""

    _task = "base"


class FlaxAutoModelForCausalLM(_BaseFlaxAutoModel):
    """`FlaxGPT2LMHeadModel`, `FlaxLlamaForCausalLM`."""

    _task = "causal_lm"


class FlaxAutoModelForSeq2SeqLM(_BaseFlaxAutoModel):
    """`FlaxT5ForConditionalGeneration`."""

    _task = "seq2seq_lm"
