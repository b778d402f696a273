"""PretrainedConfig: transformers' model configuration, field for field, in pure Python.

Semantics follow transformers 4.57 `configuration_utils.py`:
- every keyword that is not a named argument becomes an attribute;
- the legacy generation parameters (`max_length`, `top_k`, ...) are still accepted and stored;
- `from_pretrained(path, **kwargs)`: kwargs naming an existing attribute override the file's value; with
  `return_unused_kwargs=True` the others come back to the caller (the model's `__init__` gets them).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from pyengine.checkpoints.resolve import CONFIG_NAME, HubOptions, resolve_file
from pyengine.hub import PushToHubMixin

__version__ = "4.57.6"  # the transformers version whose file format we write

# Legacy generation parameters still read from config.json (transformers 4.57 keeps loading them).
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "return_dict_in_generate": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
}

# Keys never written to config.json.
_NOT_SERIALIZED = ("_name_or_path", "_commit_hash", "_attn_implementation", "_output_attentions")


class PretrainedConfig(PushToHubMixin):
    """Base class for all model configurations (HF `PretrainedConfig`).

    Args:
        output_hidden_states, output_attentions, return_dict, torchscript, dtype: model-wide switches.
        tie_word_embeddings: whether the LM head shares the input embedding matrix.
        is_encoder_decoder, is_decoder, add_cross_attention: architecture flags.
        bos_token_id, pad_token_id, eos_token_id, sep_token_id, decoder_start_token_id: special ids.
        **kwargs: any other attribute; legacy generation parameters are recognised.

    Example:
        >>> cfg = PretrainedConfig(vocab_size=10, my_flag=True)
        >>> cfg.my_flag
        True
    """

    model_type: str = ""
    attribute_map: dict[str, str] = {}
    has_no_defaults_at_init: bool = False

    def __setattr__(self, key: str, value: Any) -> None:
        key = type(self).attribute_map.get(key, key)
        super().__setattr__(key, value)

    def __getattr__(self, key: str) -> Any:
        # Only reached when normal lookup fails: resolve aliases such as GPT-2's `hidden_size` -> `n_embd`.
        mapped = type(self).attribute_map.get(key)
        if mapped is not None:
            return getattr(self, mapped)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'")

    def __init__(
        self,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
        torchscript: bool = False,
        dtype: str | None = None,
        pruned_heads: dict[int, list[int]] | None = None,
        tie_word_embeddings: bool = True,
        chunk_size_feed_forward: int = 0,
        is_encoder_decoder: bool = False,
        is_decoder: bool = False,
        cross_attention_hidden_size: int | None = None,
        add_cross_attention: bool = False,
        tie_encoder_decoder: bool = False,
        architectures: list[str] | None = None,
        finetuning_task: str | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        num_labels: int | None = None,
        task_specific_params: dict[str, Any] | None = None,
        problem_type: str | None = None,
        tokenizer_class: str | None = None,
        prefix: str | None = None,
        bos_token_id: int | None = None,
        pad_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        sep_token_id: int | None = None,
        decoder_start_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        if label2id is not None and not isinstance(label2id, dict):
            raise ValueError("Argument label2id should be a dictionary.")
        if id2label is not None and not isinstance(id2label, dict):
            raise ValueError("Argument id2label should be a dictionary.")
        torch_dtype = kwargs.pop("torch_dtype", None)
        dtype = dtype if dtype is not None else torch_dtype
        self.return_dict = return_dict
        self.output_hidden_states = output_hidden_states
        self.torchscript = torchscript
        self.dtype = _dtype_name(dtype)
        self._output_attentions = output_attentions
        self.pruned_heads = {int(k): v for k, v in (pruned_heads or {}).items()}
        self.tie_word_embeddings = tie_word_embeddings
        self.chunk_size_feed_forward = chunk_size_feed_forward
        self.is_encoder_decoder = is_encoder_decoder
        self.is_decoder = is_decoder
        self.cross_attention_hidden_size = cross_attention_hidden_size
        self.add_cross_attention = add_cross_attention
        self.tie_encoder_decoder = tie_encoder_decoder
        self.architectures = architectures
        self.finetuning_task = finetuning_task
        self.task_specific_params = task_specific_params
        self.problem_type = problem_type
        if id2label is None:
            n = num_labels if num_labels is not None else 2
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            self.id2label = {int(k): v for k, v in id2label.items()}
            self.label2id = label2id if label2id is not None else {v: k for k, v in self.id2label.items()}
        self.tokenizer_class = tokenizer_class
        self.prefix = prefix
        self.bos_token_id = bos_token_id
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.sep_token_id = sep_token_id
        self.decoder_start_token_id = decoder_start_token_id
        for name, default in GENERATION_DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))
        self._name_or_path = str(kwargs.pop("name_or_path", ""))
        self._commit_hash = kwargs.pop("_commit_hash", None)
        self._attn_implementation = kwargs.pop("attn_implementation", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        self.tf_legacy_loss = kwargs.pop("tf_legacy_loss", False)
        self.use_bfloat16 = kwargs.pop("use_bfloat16", False)
        for key, value in kwargs.items():
            setattr(self, key, value)

    # -- properties transformers exposes -------------------------------------------------------------
    @property
    def output_attentions(self) -> bool:
        return self._output_attentions

    @output_attentions.setter
    def output_attentions(self, value: bool) -> None:
        self._output_attentions = value

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict and not self.torchscript

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def torch_dtype(self) -> str | None:
        return self.dtype

    # -- loading --------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load `config.json` from a local directory, a JSON file, or a hub id (via the HF cache).

        Hub keywords (`cache_dir`, `revision`, `force_download`, `local_files_only`, `token`,
        `use_auth_token`, `proxies`, `subfolder`) are consumed; the rest follow `from_dict`.
        """
        config_dict, kwargs = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if cls.model_type and model_type and model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a '{model_type}' config, not '{cls.model_type}'; "
                f"use AutoConfig.from_pretrained or {model_type}'s config class."
            )
        return cls.from_dict(config_dict, **kwargs)

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        options = HubOptions.pop_from(kwargs)
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isfile(path):
            config_file = path
        else:
            config_file = resolve_file(path, kwargs.pop("_configuration_file", CONFIG_NAME), options)
        try:
            config_dict = cls._dict_from_json_file(config_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise OSError(f"It looks like the config file at '{config_file}' is not a valid JSON file.") from err
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build a config; kwargs naming an attribute override it (returned when `return_unused_kwargs`)."""
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        kwargs.pop("_from_auto", None)
        kwargs.pop("_from_pipeline", None)
        if "torch_dtype" in kwargs:
            kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
        config_dict = dict(config_dict)
        config_dict["attn_implementation"] = kwargs.pop("attn_implementation", None)
        config = cls(**config_dict)
        used = []
        for key, value in kwargs.items():
            if hasattr(config, key):
                setattr(config, key, _dtype_name(value) if key == "dtype" else value)
                if key != "dtype":
                    used.append(key)
        for key in used:
            kwargs.pop(key)
        return (config, kwargs) if return_unused_kwargs else config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> Any:
        return cls(**cls._dict_from_json_file(json_file))

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        with open(json_file, encoding="utf-8") as reader:
            return json.loads(reader.read())

    # -- saving ---------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        push = self._prepare_push(save_directory, kwargs) if push_to_hub else None
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME), use_diff=True)
        if push is not None:
            self._upload_modified_files(save_directory, push)

    def to_dict(self) -> dict[str, Any]:
        output = copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in _NOT_SERIALIZED})
        if type(self).model_type:
            output["model_type"] = type(self).model_type
        output["transformers_version"] = __version__
        output["output_attentions"] = self.output_attentions
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the values that differ from a default `PretrainedConfig` and from this class's defaults."""
        config_dict = self.to_dict()
        base = PretrainedConfig().to_dict()
        class_defaults = type(self)().to_dict() if not self.has_no_defaults_at_init else {}
        diff = {}
        for key, value in config_dict.items():
            if (
                key not in base
                or key == "transformers_version"
                or value != base[key]
                or (key in class_defaults and value != class_defaults[key])
            ):
                diff[key] = value
        return diff

    def to_json_string(self, use_diff: bool = True) -> str:
        d = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as writer:
            writer.write(self.to_json_string(use_diff=use_diff))

    def update(self, config_dict: dict[str, Any]) -> None:
        for key, value in config_dict.items():
            setattr(self, key, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __iter__(self):
        yield from self.__dict__

    def get_text_config(self, decoder: bool = False) -> PretrainedConfig:
        return self


def _dtype_name(dtype: Any) -> str | None:
    """Keep dtypes as strings ("float32") so configs never import a framework."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    return str(dtype).rsplit(".", 1)[-1]
