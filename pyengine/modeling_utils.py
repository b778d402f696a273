"""PreTrainedModel: transformers 4.57's PyTorch model base class, reduced to what a decoder LM needs.

What it gives a model family:
- `from_pretrained` / `save_pretrained` with transformers' file formats and keyword semantics
  (config kwargs override the config, the others reach the model's `__init__`; base-model prefix
  added or stripped; missing / unexpected / mismatched keys reported as transformers reports them);
- embeddings access, weight tying (cloned under `config.torchscript`), `resize_token_embeddings`,
  head pruning persisted in `config.pruned_heads`, `dummy_inputs`, `base_model`;
- from `ModuleUtilsMixin` (`modeling_mixins.py`): parameter counts, FLOPs, mask / head-mask helpers,
  memory hooks; from `PushToHubMixin` (`hub.py`): `push_to_hub` and `save_pretrained(push_to_hub=True)`.
The attention building blocks live in `pyengine/backends/torch/attention.py` (re-exported here), the
pruning helpers in `modeling_mixins.py` (re-exported here, as transformers does).

Checkpoint bytes are read and written by `pyengine.checkpoints` as NumPy arrays; this module only maps
them onto parameters. Upstream reference: `transformers/modeling_utils.py` (4.57).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyengine.backends.torch.attention import as_kv_cache, attention, build_attention_mask  # noqa: F401
from pyengine.backends.torch.cache import KVCache  # noqa: F401
from pyengine.backends.torch.functional import ACT2FN, causal_lm_loss, gelu_new, get_activation  # noqa: F401
from pyengine.configuration_utils import PretrainedConfig
from pyengine.hub import PushToHubMixin
from pyengine.modeling_mixins import (  # noqa: F401  (transformers exports the pruning helpers here too)
    HEAD_PRUNERS,
    ModuleUtilsMixin,
    find_pruneable_heads_and_indices,
    prune_conv1d_layer,
    prune_layer,
    prune_linear_layer,
)

logger = logging.getLogger("pyengine")

# ------------------------------------------------------------------------------------------------------
# Loading helpers
# ------------------------------------------------------------------------------------------------------

_SKIP_INIT = False
DUMMY_INPUTS = [[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]]  # transformers' `utils.DUMMY_INPUTS`
_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Build modules without random initialisation (their weights are about to be loaded).

    Skips both torch's per-layer `reset_parameters` (by swapping `torch.nn.init` functions for no-ops) and
    our `post_init` initialisation, as transformers does; missing weights are initialised afterwards.
    """
    global _SKIP_INIT
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    old_skip, _SKIP_INIT = _SKIP_INIT, True
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        _SKIP_INIT = old_skip
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly in `dtype` (no float32 copy first), restoring the default afterwards."""
    if not dtype.is_floating_point:
        raise ValueError(f"Can't instantiate a model under dtype={dtype}: it is not a floating point dtype.")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _to_tensor(array: Any) -> torch.Tensor:
    """NumPy array (bfloat16 as ml_dtypes included) or tensor → tensor, without copying when possible."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    with warnings.catch_warnings():  # memory-mapped arrays are read-only; we only read from them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Tensor → NumPy for the checkpoint writers; bfloat16 goes through ml_dtypes when installed."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype != torch.bfloat16:
        return tensor.numpy()
    try:
        import ml_dtypes
    except ImportError:
        logger.warning("ml_dtypes is not installed: saving bfloat16 weights as float32 (pip install ml_dtypes).")
        return tensor.float().numpy()
    return tensor.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)


def _float_dtype_of(array: Any) -> torch.dtype | None:
    """The torch dtype of a floating-point array or tensor; None for integer / bool data."""
    if isinstance(array, torch.Tensor):
        return array.dtype if array.is_floating_point() else None
    name = np.asarray(array).dtype.name
    return getattr(torch, name) if name in ("bfloat16", "float16", "float32", "float64") else None


def _resolve_dtype(dtype: Any, config: PretrainedConfig, arrays: Mapping[str, Any]) -> torch.dtype:
    """transformers' `_get_dtype`: None → float32; "auto" → config.dtype, else the first float weight's."""
    if dtype is None:
        return torch.get_default_dtype()
    if dtype == "auto":
        if getattr(config, "dtype", None) not in (None, "auto"):
            return _resolve_dtype(str(config.dtype).removeprefix("torch."), config, arrays)
        found = (_float_dtype_of(a) for a in arrays.values())
        return next((d for d in found if d is not None), torch.get_default_dtype())
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"`dtype` must be a torch.dtype, 'auto' or a torch dtype name; got {dtype!r}.")
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"`dtype` must be a torch.dtype, 'auto' or a torch dtype name; got {dtype!r}.")
    return dtype


def _init_generation_config(config: PretrainedConfig) -> Any:
    """`GenerationConfig.from_model_config(config)` when pyengine's GenerationConfig is available."""
    try:
        from pyengine.generation_config import GenerationConfig
    except ImportError:
        return None
    return GenerationConfig.from_model_config(config)


def _fill_rows_from_old_distribution(old: torch.Tensor, new: torch.Tensor, added: int) -> None:
    """Last `added` rows of `new` ~ N(mean, 1e-9 · cov) of the rows of `old` `[N, E]`; the mean if cov is not PD."""
    rows = old.float()  # [N, E]
    mean = rows.mean(0)  # [E]
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered / rows.shape[0])  # [E, E]
    if torch.distributions.constraints.positive_definite.check(covariance).all():
        draws = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance).sample((added,))
    else:
        draws = mean[None, :].repeat(added, 1)
    new[-added:] = draws.to(new.dtype)  # [added, E]


def _tied_groups(model: nn.Module) -> list[set[str]]:
    """Names that share one Parameter object (e.g. `{"transformer.wte.weight", "lm_head.weight"}`)."""
    by_id: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), set()).add(name)
    return [names for names in by_id.values() if len(names) > 1]


# Hub keywords of older transformers that are accepted and ignored, with the reason given in the warning.
def _ignore_regex(patterns: list[str] | None) -> re.Pattern[str] | None:
    return re.compile("|".join(f"({p})" for p in patterns)) if patterns else None


# ------------------------------------------------------------------------------------------------------
# PreTrainedModel
# ------------------------------------------------------------------------------------------------------


class PreTrainedModel(nn.Module, ModuleUtilsMixin, PushToHubMixin):
    """Base class of every PyTorch model (transformers `PreTrainedModel`).

    Besides loading and saving (`from_pretrained`, `save_pretrained`, `push_to_hub`), it resizes the input
    embeddings and prunes attention heads; `ModuleUtilsMixin` adds counting, mask and memory helpers.

    Class attributes a family sets:
        config_class: its `PretrainedConfig` subclass.
        base_model_prefix: attribute holding the base model in head models ("transformer", "model").
        is_parallelizable: whether the model supports model parallelism (none of ours does).
        _keys_to_ignore_on_load_missing / _keys_to_ignore_on_load_unexpected: regexes silencing
            the corresponding load warnings.
        _keys_to_ignore_on_save: state-dict keys never written.
        _tied_weights_keys: regexes of keys that alias another weight (dropped on save).

    Example:
        >>> model = GPT2LMHeadModel.from_pretrained("path/to/gpt2")   # doctest: +SKIP
        >>> model.save_pretrained("copy")                              # doctest: +SKIP
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix: str = ""
    main_input_name: str = "input_ids"
    supports_gradient_checkpointing: bool = False
    is_parallelizable: bool = False
    _keys_to_ignore_on_load_missing: list[str] | None = None
    _keys_to_ignore_on_load_unexpected: list[str] | None = None
    _keys_to_ignore_on_save: list[str] | None = None
    _tied_weights_keys: list[str] | None = None

    def __init__(self, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise TypeError(
                f"Parameter config in `{type(self).__name__}(config)` should be an instance of class "
                f"`PretrainedConfig`. To create a model from a pretrained model use "
                f"`model = {type(self).__name__}.from_pretrained(PRETRAINED_MODEL_NAME)`"
            )
        self.config = config
        self.name_or_path = config.name_or_path
        self.warnings_issued: dict[str, bool] = {}
        self.generation_config = _init_generation_config(config) if self.can_generate() else None

    def post_init(self) -> None:
        """Called at the end of a model's `__init__`: `init_weights()` (prune, initialise unless loading, tie)."""
        self.init_weights()

    def init_weights(self) -> None:
        """Prune the heads listed in `config.pruned_heads`, initialise the weights (not while loading), tie.

        Pruning at construction is what makes a pruned checkpoint reload pruned: the shapes match the file.
        """
        if self.config.pruned_heads:
            self.prune_heads(self.config.pruned_heads)
        if not _SKIP_INIT:
            self.initialize_weights()
        self.tie_weights()

    # -- properties --------------------------------------------------------------------------------------
    @property
    def base_model(self) -> nn.Module:
        """The main body of the model: the `base_model_prefix` attribute, or the model itself."""
        return getattr(self, self.base_model_prefix, self)

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """Inputs for a forward pass that builds / traces the model: `{"input_ids": [3, 5] ids}`."""
        return {"input_ids": torch.tensor(DUMMY_INPUTS)}

    @classmethod
    def can_generate(cls) -> bool:
        """True for classes that mix in `GenerationMixin` (the LM-head classes)."""
        from pyengine.generation.utils import GenerationMixin

        return issubclass(cls, GenerationMixin)

    # -- weight initialisation ---------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' generic init: normal(0, initializer_range) for Linear/Embedding, 1/0 for norms."""
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm) or "RMSNorm" in type(module).__name__:
            if getattr(module, "weight", None) is not None:
                module.weight.data.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()

    def _initialize_weights(self, module: nn.Module) -> None:
        if getattr(module, "_is_hf_initialized", False):
            return
        self._init_weights(module)
        module._is_hf_initialized = True

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Apply `_init_weights` children-first; a nested PreTrainedModel uses its own `_init_weights`."""

        def visit(module: nn.Module, init_fn: Callable[[nn.Module], None]) -> None:
            for child in module.children():
                visit(child, child._initialize_weights if isinstance(child, PreTrainedModel) else init_fn)
            init_fn(module)

        visit(self, self._initialize_weights)

    def _mark_initialized(self, missing: set[str]) -> None:
        """Flag every module whose own weights and children are all loaded, so only the rest is initialised."""

        def mark(module: nn.Module, prefix: str) -> bool:
            children = [mark(child, f"{prefix}{name}.") for name, child in module.named_children()]
            own = [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)]
            own += [f"{prefix}{n}" for n, _ in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set]
            done = all(children) and not any(name in missing for name in own)
            module._is_hf_initialized = done
            return done

        mark(self, "")

    # -- embeddings and tying ------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        base = getattr(self, self.base_model_prefix, self)
        if base is not self:
            return base.get_input_embeddings()
        raise NotImplementedError(f"{type(self).__name__} does not define get_input_embeddings().")

    def set_input_embeddings(self, value: nn.Module) -> None:
        base = getattr(self, self.base_model_prefix, self)
        if base is not self:
            return base.set_input_embeddings(value)
        raise NotImplementedError(f"{type(self).__name__} does not define set_input_embeddings().")

    def get_output_embeddings(self) -> nn.Module | None:
        return None

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no output embeddings.")

    def tie_weights(self) -> None:
        """Share the input embedding matrix with the LM head when `config.tie_word_embeddings`.

        Under `config.torchscript` the head gets a clone instead (TorchScript can't share parameters).
        Sub-modules defining `_tie_weights()` (e.g. an LM head's bias) are called too, as in transformers.
        """
        for module in self.modules():
            if isinstance(module, PreTrainedModel) and getattr(module.config, "tie_word_embeddings", True):
                output = module.get_output_embeddings()
                if output is not None:
                    module._tie_or_clone_weights(output, module.get_input_embeddings())
            if hasattr(module, "_tie_weights"):
                module._tie_weights()

    def _tie_or_clone_weights(self, output_embeddings: nn.Module, input_embeddings: nn.Module) -> None:
        if self.config.torchscript:
            output_embeddings.weight = nn.Parameter(input_embeddings.weight.clone())
        else:
            output_embeddings.weight = input_embeddings.weight
        if getattr(output_embeddings, "bias", None) is not None:
            pad = output_embeddings.weight.shape[0] - output_embeddings.bias.shape[0]
            output_embeddings.bias.data = F.pad(output_embeddings.bias.data, (0, pad), "constant", 0)
        if hasattr(output_embeddings, "out_features") and hasattr(input_embeddings, "num_embeddings"):
            output_embeddings.out_features = input_embeddings.num_embeddings

    # -- resizing ------------------------------------------------------------------------------------------
    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Grow or shrink the vocabulary of the input embeddings (and of an untied LM head); keep tying.

        With `mean_resizing`, new rows are drawn from N(mean, 1e-9 · covariance) of the old rows
        (Hewitt 2021, https://nlp.stanford.edu/~johnhew/vocab-expansion.html), or set to the mean when that
        covariance is not positive definite; otherwise they get `_init_weights`. Same draws as
        transformers 4.57 under the same torch seed.
        """
        embeddings = self._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        vocab_size = embeddings.weight.shape[0]
        self.config.vocab_size = vocab_size
        if hasattr(self, "vocab_size"):
            self.vocab_size = vocab_size
        self.tie_weights()
        return embeddings

    def _resize_token_embeddings(
        self, new_num_tokens: int | None, pad_to_multiple_of: int | None, mean_resizing: bool
    ) -> nn.Embedding:
        old = self.get_input_embeddings()
        new = self._get_resized_embeddings(old, new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.set_input_embeddings(new)
        head = self.get_output_embeddings()
        if head is not None and not getattr(self.config, "tie_word_embeddings", True):
            self.set_output_embeddings(self._get_resized_lm_head(head, new.weight.shape[0], mean_resizing))
        return self.get_input_embeddings()

    @torch.no_grad()
    def _get_resized_embeddings(
        self, old: nn.Embedding, new_num_tokens: int | None, pad_to_multiple_of: int | None, mean_resizing: bool
    ) -> nn.Embedding:
        if pad_to_multiple_of is not None:
            new_num_tokens = old.weight.shape[0] if new_num_tokens is None else new_num_tokens
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        old_num, dim = old.weight.shape
        if new_num_tokens is None or new_num_tokens == old_num:
            return old
        new = nn.Embedding(new_num_tokens, dim, device=old.weight.device, dtype=old.weight.dtype)
        added = new_num_tokens - old_num
        if added > 0 and mean_resizing:
            _fill_rows_from_old_distribution(old.weight.data, new.weight.data, added)
        elif added > 0:
            self._init_weights(new)
        keep = min(old_num, new_num_tokens)
        new.weight.data[:keep] = old.weight.data[:keep]
        # Resize in place so that modules holding a reference to `old` (and its tied head) see the change.
        old.weight.data = new.weight.data
        old.num_embeddings = new_num_tokens
        if old.padding_idx is not None and new_num_tokens - 1 < old.padding_idx:
            old.padding_idx = None
        return old

    @torch.no_grad()
    def _get_resized_lm_head(self, old: nn.Linear, new_num_tokens: int, mean_resizing: bool) -> nn.Linear:
        old_num, dim = old.weight.shape
        if new_num_tokens == old_num:
            return old
        has_bias = old.bias is not None
        new = nn.Linear(dim, new_num_tokens, bias=has_bias, device=old.weight.device, dtype=old.weight.dtype)
        added = new_num_tokens - old_num
        if added > 0 and mean_resizing:
            _fill_rows_from_old_distribution(old.weight.data, new.weight.data, added)
            if has_bias:
                mean, std = old.bias.data.float().mean().item(), old.bias.data.std().float().item()
                new.bias.data[-added:].normal_(mean=mean, std=1e-9 * std)
        elif added > 0:
            self._init_weights(new)
        keep = min(old_num, new_num_tokens)
        new.weight.data[:keep] = old.weight.data[:keep]
        if has_bias:
            new.bias.data[:keep] = old.bias.data[:keep]
        return new

    # -- head pruning ------------------------------------------------------------------------------------
    def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Prune attention heads of the base model: `{layer: [heads]}`, e.g. `{1: [0, 2], 2: [2, 3]}`.

        The union with earlier pruning is kept in `config.pruned_heads` (lists, so config.json can hold it),
        so a saved pruned model reloads pruned.
        """
        for layer, heads in heads_to_prune.items():
            union = set(self.config.pruned_heads.get(int(layer), [])) | set(heads)
            self.config.pruned_heads[int(layer)] = sorted(union)
        self.base_model._prune_heads({int(k): list(v) for k, v in heads_to_prune.items()})

    def _prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Family hook doing the pruning (`HEAD_PRUNERS` holds the ones written outside their family)."""
        pruner = HEAD_PRUNERS.get(type(self).__name__)
        if pruner is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not support head pruning: pyengine prunes BERT, GPT-2 and T5 heads "
                "(transformers 4.57 has no head pruning for LLaMA either)."
            )
        pruner(self, heads_to_prune)

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def _convert_state_dict(cls, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoint names → our names; families override with their `convert.py` map."""
        return dict(arrays)

    @classmethod
    def _from_config(cls, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
        """A randomly initialised model (`AutoModel.from_config`), optionally built in `dtype`."""
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None) or config.dtype
        if "attn_implementation" in kwargs:
            config._attn_implementation = kwargs.pop("attn_implementation")
        dtype = _resolve_dtype(dtype, config, {}) if dtype is not None else torch.get_default_dtype()
        with _default_dtype(dtype):
            return cls(config, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        state_dict: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str = "main",
        use_safetensors: bool | None = None,
        output_loading_info: bool = False,
        dtype: Any = None,
        torch_dtype: Any = None,
        gguf_file: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Instantiate a model and load its weights (transformers `PreTrainedModel.from_pretrained`).

        Args:
            pretrained_model_name_or_path: local directory, weights file, or Hub repo id.
            *model_args: passed to the model's `__init__` after the config.
            config: a config object, or where to read one; by default `config.json` of the checkpoint.
            state_dict: weights to use instead of files (then the path must be None).
            ignore_mismatched_sizes: re-initialise weights whose shape differs instead of raising.
            use_safetensors: True / False to force a format; None prefers safetensors.
            output_loading_info: also return the missing / unexpected / mismatched keys and errors.
            dtype: torch dtype, its name, or "auto" (config.dtype, else the checkpoint's); float32 if None.
            gguf_file: a GGUF file (name inside the directory / repo, or a path): config and weights from it.
            **kwargs: hub options (`subfolder`, `proxies`, `variant`, ...); then, when `config` is not an
                object, kwargs naming config attributes override the config and the rest go to `__init__`;
                when it is an object, all go to `__init__`.

        Returns:
            The model in eval mode, or `(model, loading_info)` with `output_loading_info=True`.
        """
        from pyengine.checkpoints import load_gguf_checkpoint, load_state_dict, resolve_weight_files
        from pyengine.checkpoints.resolve import pop_hub_kwargs

        dtype = dtype if dtype is not None else torch_dtype
        variant = kwargs.pop("variant", None)
        device_map = kwargs.pop("device_map", None)
        generation_config = kwargs.pop("generation_config", None)
        from_flax = kwargs.pop("from_flax", False)  # flax_model.msgpack, renamed by the family's convert.py
        from_tf = kwargs.pop("from_tf", False)  # tf_model.h5 or a TF1 .ckpt.index, renamed by convert.tf_to_pt
        for unused in ("low_cpu_mem_usage", "_fast_init", "offload_state_dict", "trust_remote_code",
                       "_from_auto", "_from_pipeline", "weights_only"):  # fmt: skip
            kwargs.pop(unused, None)
        hub, options = pop_hub_kwargs(kwargs, cache_dir=cache_dir, force_download=force_download,
                                      local_files_only=local_files_only, token=token, revision=revision)  # fmt: skip
        if state_dict is not None and (pretrained_model_name_or_path is not None or gguf_file is not None):
            raise ValueError("`state_dict` cannot be passed together with a model name or a `gguf_file`.")

        path = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        gguf_config = None
        if gguf_file is not None:
            gguf_config, state_dict = load_gguf_checkpoint(_resolve_gguf(path, gguf_file, options))

        config, model_kwargs = cls._resolve_config(path, config, gguf_config, hub, kwargs)
        if "attn_implementation" in model_kwargs:
            config._attn_implementation = model_kwargs.pop("attn_implementation")
        if state_dict is None and from_tf and path is not None:
            from pyengine.checkpoints.tf_h5 import load_tf_as_pt
            from pyengine.models.registry import import_object

            to_pt = import_object(f"pyengine.models.{config.model_type}.convert.tf_to_pt")
            state_dict = load_tf_as_pt(path, options, to_pt, variant)
        if state_dict is None and from_flax and path is not None:
            from pyengine.checkpoints.flax_msgpack import load_flax_as_pt
            from pyengine.models.registry import import_object

            to_pt = import_object(f"pyengine.models.{config.model_type}.convert.flax_to_pt")
            state_dict = load_flax_as_pt(path, options, to_pt, variant)
        if state_dict is None:
            if path is None:
                raise ValueError("Pass a checkpoint path / repo id, a `state_dict`, or a `gguf_file`.")
            state_dict = load_state_dict(
                resolve_weight_files(path, options, use_safetensors=use_safetensors, variant=variant)
            )
        arrays = cls._convert_state_dict(state_dict)
        torch_dtype_ = _resolve_dtype(dtype, config, arrays)
        config.dtype = str(torch_dtype_).removeprefix("torch.")
        config.name_or_path = path or ""

        with _default_dtype(torch_dtype_), no_init_weights():
            model = cls(config, *model_args, **model_kwargs)
        model.tie_weights()
        info = model._load_arrays(arrays, path, ignore_mismatched_sizes)
        model.tie_weights()
        model.eval()
        model._load_generation_config(path, generation_config, hub, kwargs)
        if device_map is not None:
            model.to(_device_from_map(device_map))
        return (model, info) if output_loading_info else model

    @classmethod
    def _resolve_config(
        cls,
        path: str | None,
        config: Any,
        gguf_config: dict[str, Any] | None,
        hub: dict[str, Any],
        kwargs: dict[str, Any],
    ) -> tuple[PretrainedConfig, dict[str, Any]]:
        """transformers' rule: kwargs naming config attributes update a loaded config; the rest are model kwargs."""
        if isinstance(config, PretrainedConfig):
            return copy.deepcopy(config), kwargs
        if gguf_config is not None and config is None:
            model_type = gguf_config.get("model_type")
            if cls.config_class.model_type and model_type and model_type != cls.config_class.model_type:
                raise ValueError(f"The GGUF file holds a '{model_type}' model, not '{cls.config_class.model_type}'.")
            return cls.config_class.from_dict(gguf_config, return_unused_kwargs=True, **kwargs)
        config_path = config if config is not None else path
        if config_path is None:
            raise ValueError("`config` is required when loading from a `state_dict` without a checkpoint path.")
        return cls.config_class.from_pretrained(config_path, return_unused_kwargs=True, **hub, **kwargs)

    def _load_arrays(
        self, arrays: Mapping[str, Any], path: str | None, ignore_mismatched_sizes: bool
    ) -> dict[str, list[Any]]:
        """Map checkpoint keys onto this model, initialise what is missing, copy, report (transformers' rules)."""
        mapping, base_from_task, task_from_base = self._key_mapping(list(arrays))
        expected = self.state_dict()
        missing = sorted(set(expected) - set(mapping.values()))
        unexpected = {new for new in mapping.values() if new not in expected}
        if base_from_task:  # task-head weights of the checkpoint are unexpected in a base model
            unexpected |= {k for k in arrays if not k.startswith(f"{self.base_model_prefix}.")}
        unexpected = sorted(unexpected - {name for name, _ in self.named_buffers()})
        for group in _tied_groups(self):  # one loaded member of a tied group loads the whole group
            if any(k in group for k in missing) and not group <= set(missing):
                missing = [k for k in missing if k not in group]

        mismatched, errors = [], []
        for old, new in mapping.items():
            if new in expected and tuple(np.shape(arrays[old])) != tuple(expected[new].shape):
                shapes = (tuple(np.shape(arrays[old])), tuple(expected[new].shape))
                mismatched.append((new, shapes))
                errors.append(f"size mismatch for {new}: copying a param with shape {shapes[0]} from checkpoint, "
                              f"the shape in current model is {shapes[1]}.")  # fmt: skip
        if errors and not ignore_mismatched_sizes:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
                + "\n\tYou may consider adding `ignore_mismatched_sizes=True` in the model `from_pretrained` method."
            )
        mismatched_keys = [k for k, _ in mismatched]
        self._mark_initialized(set(missing) | set(mismatched_keys))
        self.initialize_weights()
        with torch.no_grad():
            for old, new in mapping.items():
                if new in expected and new not in mismatched_keys:
                    self.get_parameter_or_buffer(new).copy_(_to_tensor(arrays[old]))

        missing, unexpected = self._adjust_missing_and_unexpected_keys(missing, unexpected, task_from_base)
        self._warn_loading(path, missing, unexpected, mismatched)
        return {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched_keys,
                "error_msgs": []}  # fmt: skip

    def _key_mapping(self, checkpoint_keys: list[str]) -> tuple[dict[str, str], bool, bool]:
        """Checkpoint key → model key, adding or stripping `base_model_prefix` (transformers' test on prefixes)."""
        prefix = self.base_model_prefix
        has_prefix_module = bool(prefix) and any(k.startswith(prefix) for k in checkpoint_keys)
        expects_prefix_module = bool(prefix) and hasattr(self, prefix)
        task_from_base = not has_prefix_module and expects_prefix_module
        base_from_task = has_prefix_module and not expects_prefix_module
        mapping = {}
        for key in checkpoint_keys:
            if task_from_base:
                mapping[key] = f"{prefix}.{key}"
            elif base_from_task:
                if key.startswith(f"{prefix}."):
                    mapping[key] = key[len(prefix) + 1 :]
            else:
                mapping[key] = key
        return mapping, base_from_task, task_from_base

    def _adjust_missing_and_unexpected_keys(
        self, missing: list[str], unexpected: list[str], task_from_base: bool
    ) -> tuple[list[str], list[str]]:
        """Drop keys matching the class's ignore regexes; show unexpected keys under their checkpoint name."""
        unexpected_patterns = list(self._keys_to_ignore_on_load_unexpected or [])
        if any(name.endswith("rotary_emb.inv_freq") for name, _ in self.named_buffers()):
            unexpected_patterns.append(r"rotary_emb\.inv_freq")
        missing_re = _ignore_regex(self._keys_to_ignore_on_load_missing)
        unexpected_re = _ignore_regex(unexpected_patterns)
        if missing_re is not None:
            missing = [k for k in missing if missing_re.search(k) is None]
        if unexpected_re is not None:
            unexpected = [k for k in unexpected if unexpected_re.search(k) is None]
        if task_from_base:
            unexpected = [k.removeprefix(f"{self.base_model_prefix}.") for k in unexpected]
        return missing, unexpected

    def _warn_loading(
        self, path: str | None, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, Any]]
    ) -> None:
        """The two (three) warnings transformers logs after loading, same wording."""
        name = type(self).__name__
        if unexpected:
            warner = logger.warning if name in (self.config.architectures or []) else logger.info
            warner(
                f"Some weights of the model checkpoint at {path} were not used when initializing {name}: "
                f"{unexpected}\n- This IS expected if you are initializing {name} from the checkpoint of a model "
                "trained on another task or with another architecture (e.g. initializing a "
                "BertForSequenceClassification model from a BertForPreTraining model).\n- This IS NOT expected if "
                f"you are initializing {name} from the checkpoint of a model that you expect to be exactly "
                "identical (initializing a BertForSequenceClassification model from a "
                "BertForSequenceClassification model)."
            )
        if missing:
            logger.warning(
                f"Some weights of {name} were not initialized from the model checkpoint at {path} and are newly "
                f"initialized: {missing}\nYou should probably TRAIN this model on a down-stream task to be able to "
                "use it for predictions and inference."
            )
        if mismatched:
            lines = "\n".join(f"- {k}: found shape {a} in the checkpoint and {b} in the model instantiated"
                              for k, (a, b) in mismatched)  # fmt: skip
            logger.warning(
                f"Some weights of {name} were not initialized from the model checkpoint at {path} and are newly "
                f"initialized because the shapes did not match:\n{lines}\nYou should probably TRAIN this model on "
                "a down-stream task to be able to use it for predictions and inference."
            )

    def get_parameter_or_buffer(self, target: str) -> torch.Tensor:
        try:
            return self.get_parameter(target)
        except AttributeError:
            return self.get_buffer(target)

    def _load_generation_config(
        self, path: str | None, generation_config: Any, hub: dict[str, Any], kwargs: dict[str, Any]
    ) -> None:
        """Use `generation_config.json` next to the weights when there is one (else the one from the config)."""
        if not self.can_generate():
            return
        if generation_config is not None:
            self.generation_config = copy.deepcopy(generation_config)
            return
        if path is None:
            return
        try:
            from pyengine.generation_config import GenerationConfig
        except ImportError:
            return
        try:
            self.generation_config = GenerationConfig.from_pretrained(path, **hub)
        except OSError:
            logger.info("Generation config file not found, using a generation config created from the model config.")

    # -- saving ----------------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        save_function: Callable[..., Any] = torch.save,
        push_to_hub: bool = False,
        max_shard_size: int | str = "5GB",
        safe_serialization: bool = True,
        variant: str | None = None,
        save_config: bool = True,
        **kwargs: Any,
    ) -> None:
        """Write `config.json`, `generation_config.json` (generating models) and the weights.

        Tied weights are written once (transformers drops `lm_head.weight` when it aliases the embeddings);
        `safe_serialization=False` writes `pytorch_model.bin`; shards follow `max_shard_size`.
        `save_function` is accepted for API compatibility; the checkpoint writers do the I/O.
        With `push_to_hub=True` the files written are then uploaded (`repo_id` defaults to the folder name;
        other kwargs as in `push_to_hub`: `commit_message`, `token`, `private`, `revision`, `endpoint`, ...).
        """
        from pyengine.checkpoints import save_state_dict

        if os.path.isfile(save_directory):
            logger.error(f"Provided path ({save_directory}) should be a directory, not a file")
            return
        os.makedirs(save_directory, exist_ok=True)
        push = self._prepare_push(save_directory, kwargs) if push_to_hub else None
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        self.config.architectures = [type(self).__name__]
        if is_main_process and save_config:
            self.config.save_pretrained(save_directory)
            if self.can_generate() and hasattr(self.generation_config, "save_pretrained"):
                self.generation_config.save_pretrained(save_directory)
        state = dict(self.state_dict() if state_dict is None else state_dict)
        for key in self._keys_to_ignore_on_save or []:
            state.pop(key, None)
        state = self._drop_shared_tensors(state)
        arrays = {name: _to_numpy(tensor) for name, tensor in state.items()}
        save_state_dict(arrays, os.fspath(save_directory), safe_serialization=safe_serialization,
                        max_shard_size=max_shard_size, metadata={"format": "pt"}, variant=variant)  # fmt: skip
        if push is not None:
            self._upload_modified_files(save_directory, push)

    def _drop_shared_tensors(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep one name per shared storage: names matching `_tied_weights_keys` go first."""
        by_storage: dict[tuple[Any, ...], list[str]] = {}
        for name, tensor in state.items():
            key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            by_storage.setdefault(key, []).append(name)
        tied_re = _ignore_regex(self._tied_weights_keys)
        for names in by_storage.values():
            if len(names) < 2:
                continue
            tied = [n for n in sorted(names) if tied_re is not None and tied_re.search(n)]
            keep = next((n for n in sorted(names) if n not in tied), sorted(names)[0])
            for name in names:
                if name != keep:
                    del state[name]
        return state


def _resolve_gguf(path: str | None, gguf_file: str, options: Any) -> str:
    """GGUF file location: a path, a name inside a local directory, or a file of a Hub repo."""
    from pyengine.checkpoints import resolve_file

    if path is not None and os.path.isdir(path):
        candidate = os.path.join(path, options.subfolder, gguf_file)
        if os.path.isfile(candidate):
            return candidate
    if os.path.isfile(gguf_file):
        return gguf_file
    if path is None or os.path.isdir(path):
        raise OSError(f"GGUF file {gguf_file} not found in {path or 'the current directory'}; pass its path "
                      "or the directory / Hub repo that holds it.")  # fmt: skip
    return resolve_file(path, gguf_file, options)


def _device_from_map(device_map: Any) -> torch.device:
    """A single-device `device_map` ("cpu", "cuda:0", 0, {"": device}); "auto" picks CUDA when present."""
    if isinstance(device_map, dict):
        if set(device_map) != {""}:
            raise NotImplementedError("Only single-device device_map values are supported ({'': device}).")
        device_map = device_map[""]
    if device_map in ("auto", "balanced", "sequential"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device_map)
