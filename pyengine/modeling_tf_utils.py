"""TFPreTrainedModel and TFModelUtilsMixin: transformers' TF base classes, on pyengine's checkpoint code.

A TF model here is a `tf_keras.Model` whose variables carry the names transformers' TF models give
them (`transformer/h_._0/attn/c_attn/weight:0`), created at construction (no lazy build). So:
- `tf_model.h5` files are read and written by `pyengine.checkpoints.tf_h5` (NumPy + h5py) and match
  transformers 4.57 byte layout and names: its files load here, ours load there;
- `from_pt=True` reads PyTorch checkpoints (ours or transformers') through the family's
  `convert.pt_to_tf` (names and transposes in one place per family);
- `save_pretrained(saved_model=True)` writes a SavedModel whose `serving_default` signature takes
  `input_ids` / `attention_mask` (int32) and returns the model's output tensors.

A family class provides `_tf_convert` (its convert module), `get_input_embeddings`, and the forward.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tf_keras

from pyengine.backends.tf import tf
from pyengine.backends.tf.layers import TFEmbedding, normal
from pyengine.configuration_utils import PretrainedConfig
from pyengine.generation.tf_utils import TFGenerationMixin
from pyengine.hub import PushToHubMixin
from pyengine.utils.model_output import ModelOutput

logger = logging.getLogger("pyengine")

TF2_WEIGHTS_NAME = "tf_model.h5"
# transformers' DUMMY_INPUTS
DUMMY_INPUTS = [[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]]


class TFModelUtilsMixin:
    """A few utilities for `tf_keras.Model` (transformers' `TFModelUtilsMixin`)."""

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Number of (optionally only trainable) parameters; shared (tied) variables count once."""
        variables = self.trainable_variables if only_trainable else self.variables
        seen = {id(v): v for v in variables}
        return int(sum(np.prod(v.shape.as_list()) for v in seen.values()))


class TFPreTrainedModel(tf_keras.Model, TFModelUtilsMixin, TFGenerationMixin, PushToHubMixin):
    """Base class of pyengine's TF models (transformers' `TFPreTrainedModel`).

    Class attributes: `config_class`, `base_model_prefix` (the main layer's attribute name),
    `main_input_name`, `_tf_convert` (the family's convert module), `_keys_to_ignore_on_load_missing`
    / `_keys_to_ignore_on_load_unexpected` (regexes silenced in the loading report).
    """

    config_class: type[PretrainedConfig] | None = None
    base_model_prefix = ""
    main_input_name = "input_ids"
    _tf_convert: Any = None
    _keys_to_ignore_on_load_missing: list[str] = []
    _keys_to_ignore_on_load_unexpected: list[str] = []

    def __init__(self, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(*inputs, **kwargs)
        if not isinstance(config, PretrainedConfig):
            raise TypeError(
                f"{type(self).__name__}(config) takes a PretrainedConfig, got {type(config).__name__}; "
                f"build one with {self.config_class.__name__ if self.config_class else 'the config class'}(...)."
            )
        self.config = config
        self.name_or_path = config.name_or_path
        self.generation_config = self._default_generation_config() if self.can_generate() else None

    def _default_generation_config(self) -> Any:
        from pyengine.generation_config import GenerationConfig

        return GenerationConfig.from_model_config(self.config)

    # -- inputs, embeddings, heads ------------------------------------------------------------------------
    @property
    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        """Dummy inputs to build / trace the network."""
        return {"input_ids": tf.constant(DUMMY_INPUTS, tf.int32)}

    @property
    def base_model(self) -> Any:
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> tf_keras.layers.Layer:
        main = getattr(self, self.base_model_prefix, None)
        if main is not None and main is not self:
            return main.get_input_embeddings()
        raise NotImplementedError(f"{type(self).__name__} has no input embeddings.")

    def set_input_embeddings(self, value: Any) -> None:
        main = getattr(self, self.base_model_prefix, None)
        if main is None or main is self:
            raise NotImplementedError(f"{type(self).__name__} has no input embeddings to set.")
        main.set_input_embeddings(value)

    def get_lm_head(self) -> tf_keras.layers.Layer | None:
        """The LM head layer when it is a separate layer with a bias; None otherwise (transformers' rule)."""
        return None

    def get_output_embeddings(self) -> Any:
        head = self.get_lm_head()
        return head.get_output_embeddings() if head is not None else None

    def set_output_embeddings(self, value: Any) -> None:
        head = self.get_lm_head()
        if head is not None:
            head.set_output_embeddings(value)

    def get_output_layer_with_bias(self) -> tf_keras.layers.Layer | None:
        warnings.warn("The method get_output_layer_with_bias is deprecated. Please use `get_lm_head` instead.",
                      FutureWarning, stacklevel=2)  # fmt: skip
        return self.get_lm_head()

    def get_prefix_bias_name(self) -> str | None:
        warnings.warn("The method get_prefix_bias_name is deprecated. Please use `get_bias` instead.", FutureWarning,
                      stacklevel=2)  # fmt: skip
        return None

    def get_bias(self) -> dict[str, tf.Variable] | None:
        head = self.get_lm_head()
        return head.get_bias() if head is not None else None

    def set_bias(self, value: dict[str, Any]) -> None:
        head = self.get_lm_head()
        if head is not None:
            head.set_bias(value)

    def resize_token_embeddings(self, new_num_tokens: int | None = None) -> Any:
        """Resize the input token embeddings to `new_num_tokens` rows (new rows drawn from transformers' init,
        a truncated normal with `initializer_range`; removed rows dropped from the end). Tied output
        embeddings follow. Returns the (new) input embeddings layer."""
        old = self.get_input_embeddings()
        if new_num_tokens is None or new_num_tokens == self.config.vocab_size:
            return old
        if new_num_tokens <= 0:
            raise ValueError(f"`new_num_tokens` must be positive, got {new_num_tokens}.")
        old_weight = old.embeddings
        rows = min(old_weight.shape[0], new_num_tokens)
        std = getattr(self.config, "initializer_range", 0.02)
        fresh = normal([new_num_tokens, old_weight.shape[1]], std)
        value = tf.concat([old_weight[:rows], fresh[rows:]], axis=0)
        new = TFEmbedding(new_num_tokens, old_weight.shape[1], old.scope, weight_name=old.weight_name)
        new.embeddings.assign(value)
        self.set_input_embeddings(new)
        self.config.vocab_size = new_num_tokens
        self._resize_extra(new_num_tokens)
        return self.get_input_embeddings()

    def _resize_extra(self, new_num_tokens: int) -> None:
        """Hook: resize untied heads / biases (models with an LM head override it)."""

    def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Prune attention heads of the base model: `{layer: [heads]}`; recorded in `config.pruned_heads`."""
        for layer, heads in heads_to_prune.items():
            union = set(self.config.pruned_heads.get(layer, [])) | set(heads)
            self.config.pruned_heads[layer] = list(union)
        self.base_model._prune_heads(heads_to_prune)

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str = "main",
        use_safetensors: bool | None = None,
        from_pt: bool = False,
        output_loading_info: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Instantiate a TF model and load its weights (transformers' `TFPreTrainedModel.from_pretrained`).

        Args:
            pretrained_model_name_or_path: local directory, `tf_model.h5` / PyTorch weights file, or Hub id.
            config: a config object (then `kwargs` go to `__init__`), or where to read one.
            from_pt: read PyTorch weights (`model.safetensors` / `pytorch_model.bin`) instead of `tf_model.h5`.
            output_loading_info: also return `{"missing_keys", "unexpected_keys", "mismatched_keys"}`.
            **kwargs: hub options (`proxies`, `subfolder`, `variant`, `mirror`, ...); then config overrides
                when `config` is not an object, the rest to `__init__`.

        Example:
            >>> model = TFGPT2LMHeadModel.from_pretrained("./my_gpt2")  # tf_model.h5
            >>> model = TFGPT2LMHeadModel.from_pretrained("./pt_gpt2", from_pt=True)
        """
        from pyengine.checkpoints import load_state_dict, resolve_weight_files
        from pyengine.checkpoints.resolve import add_variant, pop_hub_kwargs, resolve_file
        from pyengine.checkpoints.tf_h5 import load_tf_h5

        variant = kwargs.pop("variant", None)
        generation_config = kwargs.pop("generation_config", None)
        if kwargs.pop("gguf_file", None) is not None:
            raise ValueError("gguf_file is supported by the PyTorch models only; load the GGUF file there.")
        for name in ("dtype", "torch_dtype"):
            if kwargs.pop(name, None) not in (None, "auto", "float32"):
                raise ValueError(f"`{name}`: the TF models run in float32 only.")
        for unused in ("trust_remote_code", "_from_auto", "_from_pipeline", "load_weight_prefix", "tf_to_pt_weight_rename"):
            kwargs.pop(unused, None)
        hub, options = pop_hub_kwargs(kwargs, cache_dir=cache_dir, force_download=force_download,
                                      local_files_only=local_files_only, token=token, revision=revision)  # fmt: skip
        if pretrained_model_name_or_path is None:
            raise ValueError("Pass a checkpoint folder, weights file or Hub id to from_pretrained.")
        path = os.fspath(pretrained_model_name_or_path)
        config, model_kwargs = cls._resolve_config(path, config, hub, kwargs)

        if from_pt:
            files = resolve_weight_files(path, options, use_safetensors=use_safetensors, variant=variant)
            arrays = cls._tf_convert.pt_to_tf(load_state_dict(files), config)
        else:
            if os.path.isfile(path):
                if not path.endswith(".h5"):
                    raise OSError(f"{path} is not a tf_model.h5 file; for PyTorch weights pass from_pt=True.")
                h5 = path
            else:
                h5 = resolve_file(path, add_variant(TF2_WEIGHTS_NAME, variant), options, required=False)
            if h5 is None:
                raise OSError(cls._no_tf_weights_message(path, options))
            arrays = load_tf_h5(h5)
        config.name_or_path = path
        model = cls(config, *model_args, **model_kwargs)
        info = model._load_tf_arrays(arrays, ignore_mismatched_sizes)
        model._load_generation_config(path, generation_config, hub)
        return (model, info) if output_loading_info else model

    @staticmethod
    def _no_tf_weights_message(path: str, options: Any) -> str:
        from pyengine.checkpoints.resolve import SAFE_WEIGHTS_NAME, WEIGHTS_NAME, resolve_file

        pt = [n for n in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME) if resolve_file(path, n, options, required=False)]
        if pt:
            return (f"{path} has {', '.join(pt)} but no {TF2_WEIGHTS_NAME}. Use `from_pt=True` to load this model "
                    "from those weights.")  # fmt: skip
        return f"Error no file named {TF2_WEIGHTS_NAME} found in {path}; check the path or pass from_pt=True."

    @classmethod
    def _resolve_config(cls, path: str, config: Any, hub: dict, kwargs: dict) -> tuple[PretrainedConfig, dict]:
        if isinstance(config, PretrainedConfig):
            return copy.deepcopy(config), kwargs
        config_path = config if config is not None else path
        if os.path.isfile(config_path) and not config_path.endswith(".json"):
            config_path = os.path.dirname(config_path) or "."
        return cls.config_class.from_pretrained(config_path, return_unused_kwargs=True, **hub, **kwargs)

    def tf_weights(self) -> list[tuple[str, tf.Variable]]:
        """`(transformers TF name without the model prefix, variable)`, each variable once, in creation order."""
        seen: dict[int, tuple[str, tf.Variable]] = {}
        for v in self.variables:
            seen.setdefault(id(v), (v.name, v))
        return list(seen.values())

    def _load_tf_arrays(self, arrays: dict[str, np.ndarray], ignore_mismatched_sizes: bool) -> dict[str, list]:
        """Copy arrays named as in `tf_weights()`; report missing / unexpected / mismatched (transformers' rules)."""
        import re

        names = dict(self.tf_weights())
        arrays = dict(arrays)
        for name in names:  # retro-compatibility: embeddings stored as `weight:0` (transformers does the same)
            if name not in arrays and name.endswith("embeddings:0") and name[:-12] + "weight:0" in arrays:
                arrays[name] = arrays.pop(name[:-12] + "weight:0")
        missing = [n for n in names if n not in arrays]
        unexpected = [n for n in arrays if n not in names]
        mismatched = []
        for name, var in names.items():
            if name not in arrays:
                continue
            value = np.asarray(arrays[name])
            if tuple(value.shape) != tuple(var.shape):
                if int(np.prod(value.shape)) == int(np.prod(var.shape)):
                    value = value.reshape(var.shape)  # e.g. a bias stored [1, n] vs [n]
                elif ignore_mismatched_sizes:
                    mismatched.append((name, tuple(value.shape), tuple(var.shape)))
                    continue
                else:
                    raise ValueError(
                        f"{name}: checkpoint shape {tuple(value.shape)} != model shape {tuple(var.shape)}; check the "
                        "config or pass ignore_mismatched_sizes=True."
                    )
            var.assign(value.astype(var.dtype.as_numpy_dtype))

        def keep(keys: list[str], patterns: list[str]) -> list[str]:
            return [k for k in keys if not any(re.search(p, k) for p in patterns)]

        missing = keep(missing, self._keys_to_ignore_on_load_missing)
        unexpected = keep(unexpected, self._keys_to_ignore_on_load_unexpected)
        if unexpected:
            logger.warning("Some weights of the checkpoint were not used by %s: %s", type(self).__name__, unexpected)
        if missing:
            logger.warning("Some weights of %s were not initialized from the checkpoint and are newly initialized: %s",
                           type(self).__name__, missing)  # fmt: skip
        return {"missing_keys": missing, "unexpected_keys": unexpected,
                "mismatched_keys": [m[0] for m in mismatched]}  # fmt: skip

    def _load_generation_config(self, path: str, generation_config: Any, hub: dict) -> None:
        if not self.can_generate():
            return
        if generation_config is not None:
            self.generation_config = generation_config
            return
        from pyengine.generation_config import GenerationConfig

        try:
            self.generation_config = GenerationConfig.from_pretrained(path, **hub)
        except (OSError, ValueError):
            pass  # no generation_config.json: keep the one derived from the model config

    # -- saving ------------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        saved_model: bool = False,
        version: int = 1,
        push_to_hub: bool = False,
        signatures: Any = None,
        max_shard_size: int | str = "5GB",
        create_pr: bool = False,
        safe_serialization: bool = False,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> None:
        """Save config, generation config and `tf_model.h5` (transformers' layout) to `save_directory`.

        Args:
            saved_model: also write a SavedModel to `save_directory/saved_model/<version>` whose
                `serving_default` signature is `serving` (or `signatures`).
            version: the SavedModel version folder (TF Serving layout).
            push_to_hub: upload the folder afterwards (`repo_id`, `commit_message`, `private`, ... in kwargs).
        """
        from pyengine.checkpoints.tf_h5 import save_tf_h5

        if os.path.isfile(save_directory):
            raise ValueError(f"Provided path ({save_directory}) should be a directory, not a file")
        if safe_serialization:
            raise NotImplementedError("safe_serialization=True (TF weights as safetensors) is not supported; "
                                      "save tf_model.h5 (the default) or save the PyTorch model.")  # fmt: skip
        os.makedirs(save_directory, exist_ok=True)
        plan = None
        if push_to_hub:
            kwargs["token"], kwargs["create_pr"] = token, create_pr
            plan = self._prepare_push(save_directory, kwargs)
        if saved_model:
            path = os.path.join(save_directory, "saved_model", str(version))
            self._save_serving(path, signatures)
            logger.info("Saved model created in %s", path)
        self.config.architectures = [type(self).__name__[2:]]
        self.config.save_pretrained(save_directory)
        if self.can_generate() and self.generation_config is not None:
            self.generation_config.save_pretrained(save_directory)
        groups: dict[str, list[tuple[str, np.ndarray]]] = {}
        for name, var in self.tf_weights():
            for layer in self._h5_layers(name):
                groups.setdefault(layer, []).append((self._h5_name(name), var.numpy()))
        save_tf_h5(os.path.join(save_directory, TF2_WEIGHTS_NAME), self.name, groups.items())
        if plan is not None:
            self._upload_modified_files(save_directory, plan)

    def _h5_layers(self, name: str) -> list[str]:
        """The top-level layer groups a weight is stored under (T5 overrides: shared in several)."""
        return [name.split("/", 1)[0]]

    def _h5_name(self, name: str) -> str:
        """A weight's name in the file without the model prefix ("/x" marks a name kept as is)."""
        return name

    # -- serving -----------------------------------------------------------------------------------------
    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        return {"input_ids": tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                "attention_mask": tf.TensorSpec([None, None], tf.int32, name="attention_mask")}  # fmt: skip

    def serving(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The SavedModel's serving function: a forward on `inputs`, through `serving_output`."""
        return self.serving_output(self(**inputs, training=False))

    def serving_output(self, output: Any) -> dict[str, tf.Tensor]:
        """The output tensors a served model returns (caches and per-layer tuples are dropped)."""
        return {k: v for k, v in output.items() if isinstance(v, (tf.Tensor, tf.Variable))}

    def _save_serving(self, path: str, signatures: Any) -> None:
        """A SavedModel holding the variables and one `serving_default` signature (no Keras metadata)."""
        module = tf.Module()
        module.variables_ = [v for _, v in self.tf_weights()]
        if signatures is None:
            signatures = tf.function(self.serving, input_signature=[self.input_signature])
        module.serving = signatures
        tf.saved_model.save(module, path, signatures={"serving_default": signatures})


# -- output records (transformers' TF class and field names) ------------------------------------------------
@dataclass
class TFBaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class TFBaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


@dataclass
class TFCausalLMOutputWithPast(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class TFSeq2SeqLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: tuple[Any, ...] | None = None
    decoder_attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple[Any, ...] | None = None
    encoder_attentions: tuple[Any, ...] | None = None
