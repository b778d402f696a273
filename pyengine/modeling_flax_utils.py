"""FlaxPreTrainedModel: transformers 4.x's Flax base class, with parameters held outside the module.

A Flax model is a stateless `flax.linen` module (`model.module`) plus a parameter tree (`model.params`,
nested dicts of jax arrays) that every call may replace (`model(input_ids, params=other)`). This file owns
loading and saving that tree:

    from_pretrained   config.json + flax_model.msgpack (local folder, file, or Hub id through
                      pyengine.checkpoints.resolve), or PyTorch weights with `from_pt=True` renamed and
                      transposed by the family's `convert.pt_to_flax`; dtype casts the computation (the
                      parameters stay as stored, as in transformers).
    save_pretrained   config.json, generation_config.json and flax_model.msgpack written byte-for-byte as
                      `flax.serialization.to_bytes` writes them, so transformers 4.57 reads our files.
    num_parameters / resize_token_embeddings   the base utilities that make sense for a parameter tree.

Subclasses set `config_class`, `module_class`, `base_model_prefix` and `convert` (the family's convert
module); their `__call__` is the HF-style forward. Generation lives in `generation/flax_utils.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pyengine.checkpoints import flax_msgpack
from pyengine.configuration_utils import PretrainedConfig
from pyengine.generation.flax_utils import FlaxGenerationMixin
from pyengine.hub import PushToHubMixin
from pyengine.utils.model_output import ModelOutput

logger = logging.getLogger("pyengine")

_DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class FlaxBaseModelOutput(ModelOutput):
    last_hidden_state: Any = None  # [B, S, E]
    past_key_values: Any = None  # the KV cache, advanced (when one was passed)
    pooler_output: Any = None  # [B, E] (BERT)
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class FlaxCausalLMOutput(ModelOutput):
    logits: Any = None  # [B, S, V]
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class FlaxSeq2SeqLMOutput(ModelOutput):
    logits: Any = None  # [B, S_dec, V]
    past_key_values: Any = None  # the decoder's KV cache
    encoder_last_hidden_state: Any = None  # [B, S_enc, E]


def _as_dtype(dtype: Any) -> Any:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"`dtype` {dtype!r} is not one of {sorted(_DTYPES)}; pass a jnp dtype or one of those names.")
        return _DTYPES[dtype]
    return jnp.dtype(dtype).type if dtype is not None else jnp.float32


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nested parameter tree → `{"a/b/c": leaf}`."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in flatten_params(value).items()})
        else:
            out[str(key)] = value
    return out


class FlaxPreTrainedModel(PushToHubMixin, FlaxGenerationMixin):
    """Base class of the Flax models (transformers 4.x `FlaxPreTrainedModel`).

    Args:
        config: the model configuration.
        module: the `flax.linen` module that computes the forward pass.
        input_shape: shape of the dummy `input_ids` used to initialise the parameters.
        seed: PRNG seed of the random initialisation.
        dtype: computation dtype (`jnp.float32`, `jnp.float16`, `jnp.bfloat16`); parameters are not cast.
        _do_init: False skips the random initialisation (`params` is then set by the caller).
    """

    config_class: Any = None
    module_class: Any = None
    base_model_prefix = ""
    main_input_name = "input_ids"
    convert: Any = None  # the family's convert module (pt_to_flax / flax_to_pt)

    def __init__(
        self,
        config: PretrainedConfig,
        module: Any,
        input_shape: tuple[int, ...] = (1, 1),
        seed: int = 0,
        dtype: Any = jnp.float32,
        _do_init: bool = True,
    ) -> None:
        if not isinstance(config, PretrainedConfig):
            raise TypeError(f"`config` must be a PretrainedConfig, got {type(config).__name__}.")
        self._config = config
        self._module = module
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        self.key = jax.random.PRNGKey(seed)
        self._params: dict[str, Any] | None = self.init_weights(self.key, self.input_shape) if _do_init else None
        self.generation_config = None
        if self.can_generate():
            from pyengine.generation_config import GenerationConfig

            self.generation_config = GenerationConfig.from_model_config(config)

    # -- the module and its parameters ---------------------------------------------------------------------
    def init_weights(self, rng: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """A fresh random parameter tree (plain nested dicts)."""
        ids = jnp.zeros(input_shape, dtype=jnp.int32)
        variables = self.module.init(rng, **self._init_inputs(ids))
        return _unfreeze(variables["params"])

    def _init_inputs(self, input_ids: Any) -> dict[str, Any]:
        """Keyword arguments of the module call used by `init_weights` (families override)."""
        return {"input_ids": input_ids}

    @property
    def config(self) -> PretrainedConfig:
        return self._config

    @property
    def module(self) -> Any:
        return self._module

    @property
    def framework(self) -> str:
        return "flax"

    @property
    def params(self) -> dict[str, Any]:
        if self._params is None:
            raise ValueError("This model was built with `_do_init=False`: pass `params=` or set `model.params` first.")
        return self._params

    @params.setter
    def params(self, params: Mapping[str, Any]) -> None:
        params = _unfreeze(params)
        expected = set(flatten_params(self._params_shape_tree()))
        got = set(flatten_params(params))
        if expected - got:
            raise ValueError(
                f"Some parameters are missing: {sorted(expected - got)[:8]}. Make sure the tree matches "
                "`model.params_shape_tree`."
            )
        self._params = params

    def _params_shape_tree(self) -> dict[str, Any]:
        ids = jnp.zeros(self.input_shape, dtype=jnp.int32)
        shapes = jax.eval_shape(lambda: self.module.init(jax.random.PRNGKey(0), **self._init_inputs(ids)))
        return _unfreeze(shapes["params"])

    @property
    def params_shape_tree(self) -> dict[str, Any]:
        return self._params_shape_tree()

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "_decode_step") or hasattr(cls, "_seq2seq_step")

    def _cast_floating_to(self, params: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
        cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return jax.tree_util.tree_map(cast, _unfreeze(params))

    def to_bf16(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._cast_floating_to(params, jnp.bfloat16)

    def to_fp16(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._cast_floating_to(params, jnp.float16)

    def to_fp32(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._cast_floating_to(params, jnp.float32)

    # -- base utilities (issue 11's Flax counterparts) ----------------------------------------------------
    def num_parameters(
        self, only_trainable: bool = False, exclude_embeddings: bool = False, params: Mapping[str, Any] | None = None
    ) -> int:
        """Number of scalars in the parameter tree; `exclude_embeddings` leaves out every `embedding` table
        (transformers' PyTorch rule: token and position embeddings). Every Flax parameter is trainable."""
        del only_trainable
        flat = flatten_params(self.params if params is None else params)
        return int(sum(np.prod(v.shape) for k, v in flat.items() if not (exclude_embeddings and k.endswith("/embedding"))))

    def get_input_embeddings(self, params: Mapping[str, Any] | None = None) -> Any:
        """The token embedding table `[V, E]`."""
        node: Any = self.params if params is None else params
        for part in self._embedding_path():
            node = node[part]
        return node

    def _embedding_path(self) -> tuple[str, ...]:
        """Path of the token embedding table in the parameter tree (families override)."""
        raise NotImplementedError

    def _lm_head_path(self) -> tuple[str, ...] | None:
        """Path of an untied LM head kernel `[E, V]` (families override; None when tied or absent)."""
        return None

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, params: Mapping[str, Any] | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Grow or shrink the vocabulary: the embedding table (and an untied head) keep their first rows;
        new rows are drawn from N(0, initializer_range) (`seed`). Updates `config.vocab_size` and, when
        `params` is not given, `model.params`. Returns the new tree; None returns the current one."""
        tree = _unfreeze(copy.deepcopy(self.params if params is None else params))
        if new_num_tokens is None:
            return tree
        if not isinstance(new_num_tokens, int) or new_num_tokens <= 0:
            raise ValueError(f"`new_num_tokens` must be a positive int, got {new_num_tokens!r}.")
        std = float(getattr(self.config, "initializer_range", 0.02))
        rng = jax.random.PRNGKey(seed)

        def resize(path: tuple[str, ...], axis: int) -> None:
            node = tree
            for part in path[:-1]:
                node = node[part]
            old = node[path[-1]]
            n = min(old.shape[axis], new_num_tokens)
            keep = jax.lax.slice_in_dim(old, 0, n, axis=axis)
            shape = list(old.shape)
            shape[axis] = new_num_tokens - n
            fresh = (jax.random.normal(rng, tuple(shape), jnp.float32) * std).astype(old.dtype)
            node[path[-1]] = jnp.concatenate([keep, fresh], axis=axis)

        resize(self._embedding_path(), axis=0)
        head = self._lm_head_path()
        if head is not None:
            resize(head, axis=1)
        self.config.vocab_size = new_num_tokens
        if params is None:
            self._params = tree
        return tree

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        dtype: Any = jnp.float32,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str = "main",
        **kwargs: Any,
    ) -> Any:
        """Instantiate a model from a checkpoint (transformers' `FlaxPreTrainedModel.from_pretrained`).

        Args:
            pretrained_model_name_or_path: a local folder, a weights file, or a Hub repo id.
            dtype: computation dtype; the parameters keep the checkpoint's dtype.
            config: a config object (then every kwarg goes to the module), or where to read one.
            from_pt: read PyTorch weights (`model.safetensors` / `pytorch_model.bin`) and convert them.
            ignore_mismatched_sizes: re-initialise parameters whose shape differs instead of raising.
            **kwargs: hub options (`subfolder`, `proxies`, `variant`, `use_auth_token`, ...); then, when
                `config` is not an object, kwargs naming config attributes override the loaded config and
                the rest go to the module (`seed`, `input_shape`, `_do_init`).

        Returns:
            The model; `(model, loading_info)` with `output_loading_info=True`.
        """
        from pyengine.checkpoints import load_state_dict, resolve_file, resolve_weight_files
        from pyengine.checkpoints.resolve import pop_hub_kwargs

        from_pt = kwargs.pop("from_pt", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        variant = kwargs.pop("variant", None)
        for unused in ("_from_auto", "_from_pipeline", "trust_remote_code", "from_auto_class"):
            kwargs.pop(unused, None)
        hub, options = pop_hub_kwargs(kwargs, cache_dir=cache_dir, force_download=force_download,
                                      local_files_only=local_files_only, token=token, revision=revision)  # fmt: skip
        path = os.fspath(pretrained_model_name_or_path)

        if isinstance(config, PretrainedConfig):
            config, model_kwargs = copy.deepcopy(config), kwargs
        else:
            config_path = config if config is not None else path
            config, model_kwargs = cls.config_class.from_pretrained(config_path, return_unused_kwargs=True, **hub, **kwargs)

        if from_pt:
            pt = load_state_dict(resolve_weight_files(path, options, variant=variant))
            arrays = cls._pt_to_flax({k: np.asarray(v) for k, v in pt.items()}, config)
        else:
            weights = path if os.path.isfile(path) else resolve_file(
                path, flax_msgpack.FLAX_WEIGHTS_NAME if variant is None else f"flax_model.{variant}.msgpack",
                options, required=False,
            )
            if weights is None and not os.path.isfile(path):
                weights = resolve_file(path, flax_msgpack.FLAX_WEIGHTS_INDEX_NAME, options, required=False)
            if weights is None:
                raise OSError(cls._missing_flax_weights(path, options))
            arrays = flax_msgpack.load_flax_msgpack(weights)

        model = cls(config, *model_args, dtype=_as_dtype(dtype), _do_init=False, **model_kwargs)
        params, info = model._match_params(arrays, path, ignore_mismatched_sizes)
        model._params = params
        model._load_generation_config(path, hub)
        return (model, info) if output_loading_info else model

    @classmethod
    def _pt_to_flax(cls, arrays: dict[str, np.ndarray], config: PretrainedConfig) -> dict[str, np.ndarray]:
        """PyTorch names → Flax paths with the family's map (tied heads dropped)."""
        tied = bool(getattr(config, "tie_word_embeddings", True))
        try:
            return cls.convert.pt_to_flax(arrays, tie_word_embeddings=tied)
        except TypeError:  # families whose head is always tied take no flag
            return cls.convert.pt_to_flax(arrays)

    @staticmethod
    def _missing_flax_weights(path: str, options: Any) -> str:
        from pyengine.checkpoints import resolve_file

        has_pt = any(resolve_file(path, n, options, required=False) for n in ("model.safetensors", "pytorch_model.bin"))
        if has_pt:
            return (f"{path} has PyTorch weights but no {flax_msgpack.FLAX_WEIGHTS_NAME}; pass `from_pt=True` to "
                    "convert them.")  # fmt: skip
        return f"Error no file named {flax_msgpack.FLAX_WEIGHTS_NAME} found in {path}. Check the path or the `subfolder`."

    def _match_params(
        self, arrays: Mapping[str, Any], path: str, ignore_mismatched_sizes: bool
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Checkpoint paths → this model's tree: add or strip `base_model_prefix`, random-init what is missing,
        report unexpected / mismatched keys with transformers' warnings."""
        expected = flatten_params(self._params_shape_tree())
        prefix = self.base_model_prefix
        arrays = dict(arrays)
        has_prefix = bool(prefix) and any(k.split("/")[0] == prefix for k in arrays)
        wants_prefix = bool(prefix) and any(k.split("/")[0] == prefix for k in expected)
        if has_prefix and not wants_prefix:
            arrays = {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")}
        elif wants_prefix and not has_prefix:
            arrays = {f"{prefix}/{k}": v for k, v in arrays.items()}
        missing = sorted(set(expected) - set(arrays))
        unexpected = sorted(set(arrays) - set(expected))
        mismatched = [(k, tuple(np.shape(arrays[k])), tuple(expected[k].shape)) for k in sorted(set(arrays) & set(expected))
                      if tuple(np.shape(arrays[k])) != tuple(expected[k].shape)]  # fmt: skip
        if mismatched and not ignore_mismatched_sizes:
            lines = "\n".join(f"- {k}: found shape {a} in the checkpoint and {b} in the model" for k, a, b in mismatched)
            raise ValueError(
                f"Trying to load the pretrained weight for {mismatched[0][0]} failed: shapes differ.\n{lines}\n"
                "Pass `ignore_mismatched_sizes=True` to re-initialise them."
            )
        flat = {k: jnp.asarray(arrays[k]) for k in expected if k in arrays}
        fresh_needed = set(missing) | {k for k, _, _ in mismatched}
        if fresh_needed:
            fresh = flatten_params(self.init_weights(self.key, self.input_shape))
            flat.update({k: fresh[k] for k in fresh_needed})
        name = type(self).__name__
        if unexpected:
            logger.warning(f"Some weights of the model checkpoint at {path} were not used when initializing {name}: "
                           f"{unexpected}")  # fmt: skip
        if missing:
            logger.warning(f"Some weights of {name} were not initialized from the model checkpoint at {path} and are "
                           f"newly initialized: {missing}\nYou should probably TRAIN this model on a down-stream task.")  # fmt: skip
        info = {"missing_keys": missing, "unexpected_keys": unexpected,
                "mismatched_keys": [k for k, _, _ in mismatched]}  # fmt: skip
        return flax_msgpack.unflatten(flat), info

    def _load_generation_config(self, path: str, hub: dict[str, Any]) -> None:
        if not self.can_generate():
            return
        from pyengine.generation_config import GenerationConfig

        try:
            self.generation_config = GenerationConfig.from_pretrained(path, **hub)
        except (OSError, ValueError):
            logger.info("Generation config file not found, using a generation config created from the model config.")

    # -- saving ----------------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        params: Mapping[str, Any] | None = None,
        push_to_hub: bool = False,
        max_shard_size: int | str = "10GB",
        token: str | bool | None = None,
        safe_serialization: bool = False,
        **kwargs: Any,
    ) -> None:
        """Write config.json, generation_config.json and flax_model.msgpack (transformers' layout).

        Args:
            params: the tree to save (default `model.params`).
            push_to_hub: upload the written files (kwargs as in `push_to_hub`).
            safe_serialization: write `model.safetensors` with "."-joined Flax names instead of msgpack.
        """
        if os.path.isfile(save_directory):
            logger.error(f"Provided path ({save_directory}) should be a directory, not a file")
            return
        os.makedirs(save_directory, exist_ok=True)
        if token is not None:
            kwargs["token"] = token
        push = self._prepare_push(save_directory, kwargs) if push_to_hub else None
        self.config.architectures = [type(self).__name__[4:]]  # transformers stores the PyTorch class name
        self.config.save_pretrained(save_directory)
        if self.can_generate() and self.generation_config is not None:
            self.generation_config.save_pretrained(save_directory)
        flat = {k: np.asarray(v) for k, v in flatten_params(self.params if params is None else params).items()}
        if safe_serialization:
            from pyengine.checkpoints import save_safetensors

            save_safetensors({k.replace("/", "."): v for k, v in flat.items()},
                             os.path.join(save_directory, "model.safetensors"), metadata={"format": "flax"})  # fmt: skip
        else:
            flax_msgpack.save_flax_msgpack(flat, os.path.join(save_directory, flax_msgpack.FLAX_WEIGHTS_NAME))
        if push is not None:
            self._upload_modified_files(save_directory, push)


def _unfreeze(tree: Any) -> Any:
    """FrozenDict / Mapping trees → plain nested dicts (leaves untouched)."""
    if isinstance(tree, Mapping):
        return {k: _unfreeze(v) for k, v in tree.items()}
    return tree
