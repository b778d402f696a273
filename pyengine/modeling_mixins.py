"""`ModuleUtilsMixin` and the head-pruning helpers of transformers 4.57, for PyTorch modules.

- `ModuleUtilsMixin`: `device`, `dtype`, parameter counts, FLOPs estimate, the additive attention-mask and
  head-mask helpers, and per-module memory hooks (transformers `modeling_utils.ModuleUtilsMixin`).
- Pruning: `find_pruneable_heads_and_indices`, `prune_linear_layer`, `prune_conv1d_layer`, `prune_layer`
  (transformers `pytorch_utils.py`), and `prune_gpt2_heads`, GPT-2's `_prune_heads` kept here until the
  GPT-2 attention owns a `prune_heads` of its own (see `HEAD_PRUNERS`).

Shapes: `B` batch, `S` query length, `T` key length, `H` heads, `D` head dim, `L` layers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("pyengine")

# ------------------------------------------------------------------------------------------------------
# Memory probes for add_memory_hooks
# ------------------------------------------------------------------------------------------------------


def current_rss_bytes() -> int:
    """Resident set size of this process in bytes.

    transformers requires psutil; we use it when installed, else `/proc/self/statm` (Linux), else
    `resource.getrusage` whose `ru_maxrss` is the *peak* RSS (KiB on Linux, bytes on macOS): with that last
    fallback a module's `mem_rss_diff` is the growth of the peak, never negative.
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.Process(os.getpid()).memory_info().rss
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class ModuleUtilsMixin:
    """A few utilities for `torch.nn.Module`s, mixed into `PreTrainedModel` (transformers' class of that name)."""

    # -- memory hooks ----------------------------------------------------------------------------------
    @staticmethod
    def _hook_rss_memory_pre_forward(module: nn.Module, *args: Any, **kwargs: Any) -> None:
        module.mem_rss_pre_forward = current_rss_bytes()

    @staticmethod
    def _hook_rss_memory_post_forward(module: nn.Module, *args: Any, **kwargs: Any) -> None:
        module.mem_rss_post_forward = current_rss_bytes()
        diff = module.mem_rss_post_forward - module.mem_rss_pre_forward
        module.mem_rss_diff = diff + getattr(module, "mem_rss_diff", 0)

    def add_memory_hooks(self) -> None:
        """Record, on every sub-module, the RSS increase over its forward passes (`module.mem_rss_diff`, bytes).

        Also sets `mem_rss_pre_forward` / `mem_rss_post_forward` (RSS before / after the last forward).
        Reset with `reset_memory_hooks_state()`. RSS comes from psutil when installed (see `current_rss_bytes`).
        """
        for module in self.modules():
            module.register_forward_pre_hook(self._hook_rss_memory_pre_forward)
            module.register_forward_hook(self._hook_rss_memory_post_forward)
        self.reset_memory_hooks_state()

    def reset_memory_hooks_state(self) -> None:
        """Set `mem_rss_diff`, `mem_rss_post_forward` and `mem_rss_pre_forward` of every module to 0."""
        for module in self.modules():
            module.mem_rss_diff = 0
            module.mem_rss_post_forward = 0
            module.mem_rss_pre_forward = 0

    # -- device / dtype ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the first parameter (all parameters are assumed to share it)."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The first floating-point parameter's dtype; else the last parameter's; else the default dtype."""
        last = None
        for param in self.parameters():
            last = param.dtype
            if param.is_floating_point():
                return param.dtype
        return last if last is not None else torch.get_default_dtype()

    # -- counting ----------------------------------------------------------------------------------------
    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count; tied weights count once; `exclude_embeddings` drops every `nn.Embedding` weight.

        Args:
            only_trainable: count only parameters with `requires_grad`.
            exclude_embeddings: leave out the weights of `nn.Embedding` modules (token and position tables).
        """
        skip = set()
        if exclude_embeddings:
            skip = {f"{name}.weight" for name, m in self.named_modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel() for name, p in self.named_parameters() if name not in skip and (p.requires_grad or not only_trainable)
        )

    def estimate_tokens(self, input_dict: Mapping[str, Any]) -> int:
        """Tokens in a batch: `numel()` of `input_dict[main_input_name]`; 0 (with one warning) without it."""
        if not hasattr(self, "warnings_issued"):
            self.warnings_issued = {}
        if self.main_input_name in input_dict:
            return input_dict[self.main_input_name].numel()
        if not self.warnings_issued.get("estimate_tokens"):
            logger.warning("Could not estimate the number of tokens of the input, floating-point operations will not be computed")
            self.warnings_issued["estimate_tokens"] = True
        return 0

    def floating_point_ops(self, input_dict: Mapping[str, Any], exclude_embeddings: bool = True) -> int:
        """6 × tokens × parameters: forward + backward FLOPs of one batch (Kaplan et al. 2020, sec. 2.1).

        Neglects the quadratic attention term (valid when `12 * d_model >> sequence_length`).
        """
        return 6 * self.estimate_tokens(input_dict) * self.num_parameters(exclude_embeddings=exclude_embeddings)

    # -- masks ---------------------------------------------------------------------------------------------
    def invert_attention_mask(self, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        """`[B, T]` or `[B, S, T]` 1/0 mask → additive `[B, 1, (1|S), T]` mask (0 or dtype-min)."""
        if encoder_attention_mask.dim() == 3:
            extended = encoder_attention_mask[:, None, :, :]
        else:
            extended = encoder_attention_mask[:, None, None, :]
        extended = extended.to(dtype=self.dtype)
        return (1.0 - extended) * torch.finfo(self.dtype).min

    @staticmethod
    def create_extended_attention_mask_for_decoder(
        input_shape: tuple[int, ...], attention_mask: torch.Tensor, device: torch.device | None = None
    ) -> torch.Tensor:
        """Causal × padding 1/0 mask `[B, 1, S, T]`; past keys (`T > S`) are visible to every query."""
        device = attention_mask.device if device is None else device
        batch_size, seq_length = input_shape
        seq_ids = torch.arange(seq_length, device=device)
        causal = seq_ids[None, None, :].repeat(batch_size, seq_length, 1) <= seq_ids[None, :, None]
        causal = causal.to(attention_mask.dtype)  # [B, S, S]
        prefix = attention_mask.shape[1] - seq_length
        if prefix > 0:
            causal = torch.cat([causal.new_ones(batch_size, seq_length, prefix), causal], dim=-1)  # [B, S, T]
        return causal[:, None, :, :] * attention_mask[:, None, None, :]

    def get_extended_attention_mask(
        self,
        attention_mask: torch.Tensor,
        input_shape: tuple[int, ...],
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Additive broadcastable mask `[B, 1, (1|S), T]`: 0 where attended, dtype-min where masked.

        Args:
            attention_mask: `[B, T]` (1 = attend), or `[B, S, T]` given per query.
            input_shape: `(B, S)` of the input; used for the causal part when `config.is_decoder`.
            device: where to build the causal mask (default: the mask's device).
            dtype: of the result (default: the model's).
        """
        dtype = self.dtype if dtype is None else dtype
        if attention_mask.dim() == 3:
            extended = attention_mask[:, None, :, :]
        elif attention_mask.dim() == 2 and self.config.is_decoder:
            extended = self.create_extended_attention_mask_for_decoder(input_shape, attention_mask, device)
        elif attention_mask.dim() == 2:
            extended = attention_mask[:, None, None, :]
        else:
            raise ValueError(f"Wrong shape for input_ids (shape {input_shape}) or attention_mask (shape {attention_mask.shape})")
        extended = extended.to(dtype=dtype)
        return (1.0 - extended) * torch.finfo(dtype).min

    def get_head_mask(
        self, head_mask: torch.Tensor | None, num_hidden_layers: int, is_attention_chunked: bool = False
    ) -> torch.Tensor | list[None]:
        """`[H]` or `[L, H]` keep-mask (1 keep, 0 drop) → `[L, 1|B, H, 1, 1]` in the model dtype; None → `[None] * L`.

        `is_attention_chunked` adds a trailing axis for chunked attention scores.
        """
        if head_mask is None:
            return [None] * num_hidden_layers
        head_mask = self._convert_head_mask_to_5d(head_mask, num_hidden_layers)
        return head_mask.unsqueeze(-1) if is_attention_chunked else head_mask

    def _convert_head_mask_to_5d(self, head_mask: torch.Tensor, num_hidden_layers: int) -> torch.Tensor:
        if head_mask.dim() == 1:
            head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
        elif head_mask.dim() == 2:
            head_mask = head_mask[:, None, :, None, None]  # one row per layer
        if head_mask.dim() != 5:
            raise ValueError(f"head_mask must be [num_heads], [num_layers, num_heads] or 5-D; got {head_mask.dim()}-D.")
        return head_mask.to(dtype=self.dtype)


# ------------------------------------------------------------------------------------------------------
# Head pruning (transformers `pytorch_utils.py`)
# ------------------------------------------------------------------------------------------------------


def find_pruneable_heads_and_indices(
    heads: Iterable[int], n_heads: int, head_size: int, already_pruned_heads: set[int]
) -> tuple[set[int], torch.LongTensor]:
    """Heads still to prune, and the indices of the rows/columns to keep in a `[n_heads * head_size]` axis.

    Args:
        heads: original indices of the heads to prune.
        n_heads: heads the layer has now (already-pruned ones removed).
        head_size: `D`.
        already_pruned_heads: original indices pruned before; they are skipped and shift later heads down.
    """
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        mask[head - sum(1 for h in already_pruned_heads if h < head)] = 0  # position among the remaining heads
    keep = mask.view(-1).eq(1)
    return heads, torch.arange(len(keep))[keep].long()


def prune_linear_layer(layer: nn.Linear, index: torch.LongTensor, dim: int = 0) -> nn.Linear:
    """A new `nn.Linear` keeping only entries `index` of the weight along `dim` (0: outputs, 1: inputs).

    The bias follows the outputs (kept whole when pruning inputs). Same device and dtype as `layer`;
    parameters have `requires_grad=True`.
    """
    index = index.to(layer.weight.device)
    weight = layer.weight.index_select(dim, index).detach().clone()
    bias = None
    if layer.bias is not None:
        bias = layer.bias.detach().clone() if dim == 1 else layer.bias[index].detach().clone()
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight.contiguous())
        if bias is not None:
            new.bias.copy_(bias.contiguous())
    return new


def prune_conv1d_layer(layer: nn.Module, index: torch.LongTensor, dim: int = 1) -> nn.Module:
    """GPT-2's `Conv1D` (weight `[in, out]`) keeping only entries `index` along `dim` (1: outputs, 0: inputs).

    Builds a new layer of `type(layer)` (constructor `(nf, nx)`, as transformers' `Conv1D`), same dtype/device.
    """
    index = index.to(layer.weight.device)
    weight = layer.weight.index_select(dim, index).detach().clone()
    bias = layer.bias.detach().clone() if dim == 0 else layer.bias[index].detach().clone()
    nx, nf = weight.shape
    new = type(layer)(nf, nx).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight.contiguous())
        new.bias.copy_(bias.contiguous())
    return new


def prune_layer(layer: nn.Module, index: torch.LongTensor, dim: int | None = None) -> nn.Module:
    """`prune_linear_layer` (default dim 0) or `prune_conv1d_layer` (default dim 1) by the layer's type."""
    if isinstance(layer, nn.Linear):
        return prune_linear_layer(layer, index, dim=0 if dim is None else dim)
    if type(layer).__name__ == "Conv1D":
        return prune_conv1d_layer(layer, index, dim=1 if dim is None else dim)
    raise ValueError(f"Can't prune layer of class {layer.__class__}")


# -- GPT-2 ---------------------------------------------------------------------------------------------


def prune_gpt2_heads(model: nn.Module, heads_to_prune: Mapping[int, list[int]]) -> None:
    """transformers' `GPT2Model._prune_heads` / `GPT2Attention.prune_heads` for pyengine's GPT-2.

    Removes the heads' columns from the fused `c_attn` (Q, K and V blocks) and their rows from `c_proj`,
    then shrinks the attention's `num_heads` and inner width (`embed_dim`, which its forward uses to split
    Q/K/V and to merge heads). A forward pre-hook (`_fit_cache_to_pruned_heads`) resizes the per-layer KV
    buffers, since `GPT2PreTrainedModel.new_cache` allocates `n_head` heads in every layer.
    """
    for layer, heads in heads_to_prune.items():
        attn = model.h[int(layer)].attn
        if len(heads) == 0:
            continue
        pruned = getattr(attn, "pruned_heads", set())
        heads, index = find_pruneable_heads_and_indices(heads, attn.num_heads, attn.head_dim, pruned)
        split = attn.embed_dim  # current width of each of the Q, K, V blocks
        index_attn = torch.cat([index, index + split, index + 2 * split])
        attn.c_attn = prune_conv1d_layer(attn.c_attn, index_attn, dim=1)
        attn.c_proj = prune_conv1d_layer(attn.c_proj, index, dim=0)
        attn.num_heads -= len(heads)
        attn.embed_dim = attn.head_dim * attn.num_heads
        attn.pruned_heads = pruned | heads
    if not getattr(model, "_pruned_cache_hook", False):
        model.register_forward_pre_hook(_fit_cache_to_pruned_heads, with_kwargs=True)
        model._pruned_cache_hook = True


def _fit_cache_to_pruned_heads(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Give every layer of an empty `KVCache` as many heads as that (pruned) layer has.

    `KVCache` keeps one buffer per layer, so buffers of different head counts work unchanged (grow and
    beam reorder are per buffer). Without a cache and with `use_cache`, one is built here.
    """
    from pyengine.backends.torch.cache import KVCache

    past = kwargs.get("past_key_values", args[1] if len(args) > 1 else None)
    use_cache = kwargs.get("use_cache")
    use_cache = model.config.use_cache if use_cache is None else use_cache
    if past is None and use_cache:
        inputs = kwargs.get("input_ids", args[0] if args else None)
        if inputs is None:
            inputs = kwargs["inputs_embeds"]
        past = model.new_cache(inputs.shape[0], inputs.shape[1])
        if len(args) > 1:
            args = (args[0], past, *args[2:])
        else:
            kwargs["past_key_values"] = past
    if not isinstance(past, KVCache):
        return args, kwargs
    for i, block in enumerate(model.h):
        heads = block.attn.num_heads
        for buffers in (past.keys, past.values):
            if buffers[i].shape[1] != heads:
                if past.length > 0:
                    raise ValueError(f"The KV cache holds {buffers[i].shape[1]} heads for layer {i}, which has {heads} after pruning.")
                b, _, t, d = buffers[i].shape
                buffers[i] = buffers[i].new_zeros(b, heads, t, d)  # [B, H_i, T, D]
    return args, kwargs


# Model class name → function(model, heads_to_prune) implementing `_prune_heads` for classes that don't.
HEAD_PRUNERS: dict[str, Callable[[nn.Module, Mapping[int, list[int]]], None]] = {
    "GPT2Model": prune_gpt2_heads,
}
