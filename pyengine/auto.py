"""Auto classes: pick the config / model class from `model_type` (transformers' `AutoConfig`, `AutoModel`,
`AutoModelForCausalLM`), through the literal table in `pyengine.models.registry`.

Example:
    >>> model = AutoModelForCausalLM.from_pretrained("path/to/checkpoint")   # doctest: +SKIP
    >>> config = AutoConfig.for_model("gpt2", n_layer=2)
    >>> type(config).__name__
    'GPT2Config'
"""

from __future__ import annotations

import os
from typing import Any

from pyengine.configuration_utils import PretrainedConfig
from pyengine.models import registry

# Keyword arguments that say where to find files; both the config and the weights need them.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "use_auth_token", "revision",
               "proxies", "subfolder", "resume_download", "_commit_hash")  # fmt: skip


class AutoConfig:
    """Builds the right `PretrainedConfig` subclass from a checkpoint's `model_type`."""

    def __init__(self) -> None:
        raise OSError("AutoConfig is designed to be instantiated using `AutoConfig.from_pretrained(path)`.")

    @classmethod
    def for_model(cls, model_type: str, *args: Any, **kwargs: Any) -> PretrainedConfig:
        """A fresh config of `model_type` (unknown types raise ValueError listing the supported ones)."""
        return registry.config_class(model_type)(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Read `config.json` (or a GGUF file's metadata with `gguf_file=`) and build its config class.

        kwargs naming config attributes override the file; with `return_unused_kwargs=True` the others
        are returned too, as `(config, unused_kwargs)`.
        """
        gguf_file = kwargs.pop("gguf_file", None)
        if gguf_file is not None:
            config_dict = _gguf_config_dict(pretrained_model_name_or_path, gguf_file, kwargs)
        else:
            config_dict, kwargs = PretrainedConfig.get_config_dict(pretrained_model_name_or_path, **kwargs)
        config_class = registry.config_class(config_dict.get("model_type"))
        return config_class.from_dict(config_dict, **kwargs)


def _gguf_config_dict(path: str | os.PathLike, gguf_file: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    from pyengine.checkpoints.gguf import load_gguf_config
    from pyengine.checkpoints.resolve import HubOptions
    from pyengine.modeling_utils import _resolve_gguf

    options = HubOptions.pop_from(kwargs)
    return load_gguf_config(_resolve_gguf(os.fspath(path), gguf_file, options))


class _BaseAutoModel:
    """Shared `from_pretrained` / `from_config` of the auto model classes; `_task` picks the column."""

    _task: str = ""

    def __init__(self) -> None:
        raise OSError(
            f"{type(self).__name__} is designed to be instantiated using `{type(self).__name__}.from_pretrained(path)` "
            f"or `{type(self).__name__}.from_config(config)`."
        )

    @classmethod
    def model_class_for(cls, config: PretrainedConfig) -> Any:
        return registry.model_class(getattr(config, "model_type", None), cls._task)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> Any:
        """A randomly initialised model of the config's type (`dtype=` optional)."""
        return cls.model_class_for(config)._from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any) -> Any:
        """Load the config (overridden by matching kwargs), pick the class, then its `from_pretrained`."""
        config = kwargs.pop("config", None)
        gguf_file = kwargs.pop("gguf_file", None)
        hub = {name: kwargs.pop(name) for name in _HUB_KWARGS if name in kwargs}
        if not isinstance(config, PretrainedConfig):
            source = config if config is not None else pretrained_model_name_or_path
            # dtype is a loading instruction ("auto" included), not a config override: keep it for the model.
            dtypes = {name: kwargs.pop(name) for name in ("dtype", "torch_dtype") if name in kwargs}
            config, kwargs = AutoConfig.from_pretrained(
                source, return_unused_kwargs=True, gguf_file=gguf_file, **dict(hub), **kwargs
            )
            kwargs.update(dtypes)
        model_class = cls.model_class_for(config)
        return model_class.from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, gguf_file=gguf_file, **hub, **kwargs
        )


class AutoModel(_BaseAutoModel):
    """The base model (no head): `GPT2Model`, `LlamaModel`, ..."""

    _task = "base"


class AutoModelForCausalLM(_BaseAutoModel):
    """The language-model class: `GPT2LMHeadModel`, `LlamaForCausalLM`, ..."""

    _task = "causal_lm"


class AutoModelForSeq2SeqLM(_BaseAutoModel):
    """The encoder-decoder language-model class: `T5ForConditionalGeneration`, ..."""

    _task = "seq2seq_lm"
