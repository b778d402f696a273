"""GenerationConfig: transformers 4.57's generation parameters, names and defaults, in pure Python.

Precedence (transformers `_prepare_generation_config`): keyword arguments to `generate()` >
the `generation_config` argument > `model.generation_config` (from `generation_config.json`, or built
from the model config) > these defaults. `update(**kwargs)` sets known fields and returns the rest,
which `generate()` treats as model keyword arguments.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
from typing import Any

from pyengine.checkpoints.resolve import GENERATION_CONFIG_NAME, HubOptions, resolve_file
from pyengine.hub import PushToHubMixin

_DEFAULTS: dict[str, Any] = {
    # length
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "max_time": None,
    "stop_strings": None,
    # strategy
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "dola_layers": None,
    # cache
    "use_cache": True,
    "cache_implementation": None,
    "cache_config": None,
    "return_legacy_cache": None,
    "prefill_chunk_size": None,
    # logits manipulation
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "renormalize_logits": False,
    "constraints": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "token_healing": False,
    "guidance_scale": None,
    "low_memory": None,
    "watermarking_config": None,
    # outputs
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "output_logits": None,
    "return_dict_in_generate": False,
    # special tokens
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "encoder_no_repeat_ngram_size": 0,
    "decoder_start_token_id": None,
    # assisted generation (accepted for compatibility)
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
    "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None,
    "assistant_early_exit": None,
    "assistant_lookbehind": 10,
    "target_lookbehind": 10,
    "compile_config": None,
    "disable_compile": False,
}

EXTRA_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
# Type-checked before the range checks below, so `max_new_tokens="3"` names the argument instead of
# failing inside a comparison or a tensor allocation.
_INT_FIELDS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_beam_groups",
               "num_return_sequences", "no_repeat_ngram_size")
_REAL_FIELDS = ("temperature", "top_p", "min_p", "repetition_penalty")



def _check_type(name: str, value: Any, kind: type, what: str) -> None:
    """None passes (field unset); bools are refused although Python counts them as ints."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"`{name}` has to be {what}, but is {value!r}.")


class GenerationConfig(PushToHubMixin):
    """The parameters of one `generate()` call (HF `GenerationConfig`).

    Args:
        **kwargs: any field of the defaults table above; unknown keys become attributes too
            (transformers keeps custom keys from `generation_config.json`).

    Example:
        >>> GenerationConfig(do_sample=True, top_p=0.9).top_k
        50
    """

    def __init__(self, **kwargs: Any) -> None:
        for name, default in _DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        self._from_model_config = kwargs.pop("_from_model_config", False)
        self._commit_hash = kwargs.pop("_commit_hash", None)
        self.transformers_version = kwargs.pop("transformers_version", "4.57.6")
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.validate()

    # -- validation -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Reject values no strategy can run with; messages say which argument and what to pass."""
        for name in _INT_FIELDS:
            _check_type(name, getattr(self, name), numbers.Integral, "an integer")
        for name in _REAL_FIELDS:
            _check_type(name, getattr(self, name), numbers.Real, "a number")
        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            raise ValueError(f"`max_new_tokens` must be greater than or equal to 0, but is {self.max_new_tokens}.")
        if self.max_length is not None and self.max_length < 0:
            raise ValueError(f"`max_length` must be non-negative, but is {self.max_length}.")
        if self.top_p is not None and not (0.0 <= float(self.top_p) <= 1.0):
            raise ValueError(f"`top_p` has to be a float >= 0 and <= 1, but is {self.top_p}.")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ValueError(f"`top_k` has to be a non-negative integer, but is {self.top_k}.")
        if self.min_p is not None and not (0.0 <= float(self.min_p) <= 1.0):
            raise ValueError(f"`min_p` has to be a float in [0, 1], but is {self.min_p}.")
        if self.temperature is not None and self.do_sample and not float(self.temperature) > 0.0:  # NaN too
            raise ValueError(
                f"`temperature` (={self.temperature}) has to be a strictly positive float when sampling; "
                "for greedy decoding pass `do_sample=False` instead."
            )
        if self.repetition_penalty is not None and not float(self.repetition_penalty) > 0.0:  # NaN too
            raise ValueError(f"`repetition_penalty` has to be a strictly positive float, but is {self.repetition_penalty}.")
        if self.num_beams is None or self.num_beams < 1:
            raise ValueError(f"`num_beams` has to be a positive integer, but is {self.num_beams}.")
        if self.num_return_sequences is None or self.num_return_sequences < 1:
            raise ValueError(f"`num_return_sequences` has to be a positive integer, but is {self.num_return_sequences}.")
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size < 0:
            raise ValueError(f"`no_repeat_ngram_size` has to be >= 0, but is {self.no_repeat_ngram_size}.")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(
                f"`min_length` ({self.min_length}) is larger than `max_length` ({self.max_length}); "
                "lower `min_length` or raise `max_length`/`max_new_tokens`."
            )
        if self.num_beam_groups is not None and self.num_beam_groups > 1:
            if self.do_sample:
                raise ValueError(
                    "Diverse beam search cannot be used in sampling mode. Make sure that `do_sample` is set to `False`."
                )
            if self.num_beams % self.num_beam_groups != 0:
                raise ValueError(
                    f"`num_beams` ({self.num_beams}) should be divisible by `num_beam_groups` ({self.num_beam_groups}) "
                    "for group beam search."
                )
            if not self.diversity_penalty:
                raise ValueError("`diversity_penalty` should be greater than `0.0`, otherwise your groups will be identical.")
        if self.bad_words_ids is not None:
            ok = isinstance(self.bad_words_ids, list) and len(self.bad_words_ids) > 0
            ok = ok and all(isinstance(w, list) and len(w) > 0 for w in self.bad_words_ids)
            ok = ok and all(isinstance(t, int) and t >= 0 for w in self.bad_words_ids for t in w)
            if not ok:
                raise ValueError(
                    f"`bad_words_ids` has to be a non-empty list of non-empty lists of non-negative ints, "
                    f"but is {self.bad_words_ids}."
                )

    def get_generation_mode(self) -> str:
        """One of greedy_search, sample, beam_search, beam_sample, group_beam_search."""
        if self.num_beams == 1:
            return "sample" if self.do_sample else "greedy_search"
        if self.num_beam_groups > 1:
            return "group_beam_search"
        return "beam_sample" if self.do_sample else "beam_search"

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, model_config: Any) -> GenerationConfig:
        """Build from a model config's legacy generation fields (None values keep our defaults)."""
        config_dict = {k: v for k, v in model_config.to_dict().items() if v is not None}
        config_dict.pop("_from_model_config", None)
        known = {k: v for k, v in config_dict.items() if k in _DEFAULTS}
        config = cls(**known, _from_model_config=True)
        if not config.return_dict_in_generate and any(getattr(config, f, False) for f in EXTRA_OUTPUT_FLAGS):
            config.return_dict_in_generate = True
        config._original_object_hash = hash(config)
        return config

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name: str | os.PathLike, config_file_name: str | None = None, **kwargs: Any
    ) -> GenerationConfig:
        options = HubOptions.pop_from(kwargs)
        path = os.fspath(pretrained_model_name)
        name = config_file_name or GENERATION_CONFIG_NAME
        config_file = path if os.path.isfile(path) else resolve_file(path, name, options)
        with open(config_file, encoding="utf-8") as f:
            config_dict = json.load(f)
        return cls.from_dict(config_dict, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config = cls(**{**config_dict, **kwargs})
        unused = config.update(**kwargs)
        return (config, unused) if return_unused_kwargs else config

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the known fields; return the unknown ones (they become model kwargs in `generate`)."""
        used = [key for key in kwargs if hasattr(self, key)]
        for key in used:
            setattr(self, key, kwargs[key])
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in used}

    # -- saving ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = copy.deepcopy({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        out["transformers_version"] = self.transformers_version
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        default = GenerationConfig().to_dict()
        return {
            k: v for k, v in self.to_dict().items() if k not in default or v != default[k] or k == "transformers_version"
        }

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        config_file_name: str | None = None,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """Write `generation_config.json` (or `config_file_name`); with `push_to_hub=True` upload it too
        (kwargs as in `push_to_hub`: `repo_id`, `commit_message`, `token`, `revision`, ...)."""
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        push = self._prepare_push(save_directory, kwargs) if push_to_hub else None
        self.to_json_file(os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME))
        if push is not None:
            self._upload_modified_files(save_directory, push)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationConfig):
            return False
        return self.to_json_string(use_diff=False) == other.to_json_string(use_diff=False)

    def __hash__(self) -> int:
        return hash(self.to_json_string(use_diff=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
