"""T5 in PyTorch, parameter for parameter transformers' `T5Model`, `T5ForConditionalGeneration` and
`T5EncoderModel`.

Read top to bottom: layer norm → relative position buckets → feed-forward → attention → block → stack
(encoder or decoder) → the decoder cache → models. Parameter names match transformers, so checkpoints load
in either library unchanged. Main diffs with LLaMA: an encoder-decoder; no positional embeddings but a learned
relative position bias (computed by the first layer of each stack, added to the scores of every layer); no
1/sqrt(D) score scaling (T5 folds it into the init of `q`); a cross-attention sublayer in the decoder.

Engine contract (`T5ForConditionalGeneration`):
- `encode(input_ids, attention_mask) -> BaseModelOutput` runs the encoder once.
- `new_cache(batch_size, max_length) -> EncoderDecoderCache`: decoder self-attention K/V preallocated for
  `max_length` decoder tokens; cross-attention K/V slots empty until the first decoder forward fills them
  from the encoder output (then reused: later steps skip the K/V projections of the encoder states).
- `forward(decoder_input_ids=..., encoder_outputs=..., attention_mask=..., past_key_values=cache)` runs `S`
  decoder tokens, writes self-attention positions `[past, past + S)` and advances the cache once.
- `num_layers` (decoder), `num_kv_heads`, `head_dim`; `cache.reorder(index)` for beam search.

Shapes: `B` batch, `S` new (decoder) tokens, `T` past + new tokens, `S_enc` encoder tokens, `H` heads,
`D` head dim (`d_kv`), `E` model width (`d_model`), `V` vocab.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyengine.backends.torch.cache import KVCache
from pyengine.backends.torch.functional import get_activation
from pyengine.generation.utils import GenerationMixin
from pyengine.modeling_mixins import find_pruneable_heads_and_indices, prune_linear_layer
from pyengine.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from pyengine.modeling_utils import PreTrainedModel
from pyengine.models.t5 import convert
from pyengine.models.t5.config import T5Config


class T5LayerNorm(nn.Module):
    """RMS norm without bias or mean subtraction; the variance in float32 whatever the input dtype.

    Main diff with `LlamaRMSNorm`: the input (not its float32 copy) is scaled, and the result is cast down
    only for half-precision weights, exactly as transformers' `T5LayerNorm`.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            hidden_states = hidden_states.to(self.weight.dtype)
        return self.weight * hidden_states


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Bucket of each `key - query` distance (Mesh TensorFlow's T5 scheme).

    Half of the buckets (per direction when bidirectional) hold exact distances `0 .. max_exact - 1`; the
    others cover `max_exact .. max_distance` logarithmically, and everything further shares the last bucket.
    Causal (decoder) attention only sees keys at or before the query, so only non-positive offsets count.
    The float expression is transformers' operation for operation, so bucket boundaries agree exactly.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(torch.long) * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


def _clamp_fp16(hidden_states: torch.Tensor) -> torch.Tensor:
    """Keep float16 activations finite (transformers clamps after every T5 sublayer in float16)."""
    if hidden_states.dtype != torch.float16:
        return hidden_states
    limit = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(hidden_states).any(), limit - 1000, limit)
    return torch.clamp(hidden_states, min=-limit, max=limit)


class T5DenseActDense(nn.Module):
    """T5 feed-forward: wo(act(wi(x)))."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.act(self.wi(hidden_states)))
        return self.wo(hidden_states.to(self.wo.weight.dtype))  # `wo` may be kept in float32 (flan-t5-xxl)


class T5DenseGatedActDense(nn.Module):
    """T5 v1.1 gated feed-forward: wo(act(wi_0(x)) * wi_1(x))."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states))
        return self.wo(hidden_states.to(self.wo.weight.dtype))


class T5LayerFF(nn.Module):
    """Pre-norm residual feed-forward sublayer."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.dropout(self.DenseReluDense(self.layer_norm(hidden_states)))


class T5Attention(nn.Module):
    """Multi-head attention without score scaling; the additive `bias` carries positions and masking.

    Self-attention writes its K/V into `cache.self_attention_cache`; cross-attention projects the encoder
    states once and keeps them in `cache` (`is_cross_attention`).
    """

    def __init__(
        self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool, layer_idx: int,
        is_cross_attention: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        self.is_cross_attention = is_cross_attention
        self.has_relative_attention_bias = has_relative_attention_bias
        self.layer_idx = layer_idx
        self.n_heads = config.num_heads
        self.key_value_proj_dim = config.d_kv
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.dropout = config.dropout_rate
        self.q = nn.Linear(config.d_model, self.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, self.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, self.inner_dim, bias=False)
        self.o = nn.Linear(self.inner_dim, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, self.n_heads)
        self.pruned_heads: set[int] = set()

    def prune_heads(self, heads: list[int] | set[int]) -> None:
        """Remove heads (original indices) from q/k/v/o; the shared position bias keeps every head and
        `forward` drops the pruned ones from it (the bias is computed once, by layer 0, for all layers)."""
        heads, index = find_pruneable_heads_and_indices(heads, self.n_heads, self.key_value_proj_dim, self.pruned_heads)
        if not heads:
            return
        self.q, self.k, self.v = (prune_linear_layer(layer, index) for layer in (self.q, self.k, self.v))
        self.o = prune_linear_layer(self.o, index, dim=1)
        self.n_heads -= len(heads)
        self.inner_dim = self.key_value_proj_dim * self.n_heads
        self.pruned_heads |= heads

    def compute_bias(self, query_positions: torch.Tensor, key_length: int) -> torch.Tensor:
        """Relative position bias `[1, H, S, T]` of queries at `query_positions [S]` over keys `0 .. T-1`."""
        keys = torch.arange(key_length, dtype=torch.long, device=query_positions.device)
        relative = keys[None, :] - query_positions.to(torch.long)[:, None]  # [S, T]
        cfg = self.config
        buckets = relative_position_bucket(relative, not self.is_decoder, cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance)  # fmt: skip
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, S, T]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        return x.view(batch, length, self.n_heads, self.key_value_proj_dim).transpose(1, 2)  # [B, H, *, D]

    def _key_value(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None,
        cache: EncoderDecoderCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_cross_attention:
            key, value = (
                self._heads(self.k(hidden_states)),
                self._heads(self.v(hidden_states)),
            )  # [B, H, S, D]
            if cache is not None:
                key, value = cache.self_attention_cache.update(self.layer_idx, key, value)  # [B, H, T, D]
            return key, value
        if cache is not None and cache.cross_keys[self.layer_idx] is not None:
            return cache.cross_keys[self.layer_idx], cache.cross_values[self.layer_idx]  # [B, H, S_enc, D]
        if key_value_states is None:
            raise ValueError(
                "Cross-attention needs `encoder_hidden_states` (or a cache holding the cross K/V)."
            )
        key, value = self._heads(self.k(key_value_states)), self._heads(self.v(key_value_states))
        if cache is not None:
            cache.cross_keys[self.layer_idx], cache.cross_values[self.layer_idx] = key, value
        return key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None,
        key_value_states: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        layer_head_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states [B, S, E]` → `(output [B, S, E], probs [B, H, S, T] or None)`.

        `bias` `[B|1, H|1, S, T]` is added to the scores: relative positions plus the mask (dtype min).
        """
        batch, seq = hidden_states.shape[:2]
        if self.pruned_heads and bias is not None and bias.shape[1] > 1:  # bias has every original head
            keep = [h for h in range(bias.shape[1]) if h not in self.pruned_heads]
            bias = bias[:, keep]
        query = self._heads(self.q(hidden_states))  # [B, H, S, D]
        key, value = self._key_value(hidden_states, key_value_states, cache)  # [B, H, T, D]
        dropout_p = self.dropout if self.training else 0.0
        # transformers runs T5 eagerly (bit-exact parity); SDPA with the bias as a float mask is opt-in
        # (attn_implementation="sdpa"). Either way scale=1: T5 folds 1/sqrt(D) into the init of `q`.
        sdpa = (
            self.config._attn_implementation == "sdpa" and not output_attentions and layer_head_mask is None
        )
        probs = None
        if sdpa:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias, dropout_p=dropout_p, scale=1.0
            )
        else:
            scores = torch.matmul(query, key.transpose(2, 3))  # [B, H, S, T]
            if bias is not None:
                scores = scores + bias
            probs = torch.softmax(scores.float(), dim=-1).type_as(scores)  # in float32, as transformers
            probs = F.dropout(probs, p=dropout_p, training=self.training)
            if layer_head_mask is not None:
                probs = probs * layer_head_mask
            out = torch.matmul(probs, value)  # [B, H, S, D]
        return self.o(out.transpose(1, 2).reshape(batch, seq, self.inner_dim)), probs


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config: T5Config, has_relative_bias: bool, is_decoder: bool, layer_idx: int) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_bias, is_decoder, layer_idx)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(
        self,
        hidden_states: Tensor,
        bias: Tensor | None,
        cache: EncoderDecoderCache | None,
        head_mask: Tensor | None,
        output_attentions: bool,
    ) -> tuple[Tensor, Tensor | None]:
        normed = self.layer_norm(hidden_states)
        out, probs = self.SelfAttention(normed, bias, None, cache, head_mask, output_attentions)
        return hidden_states + self.dropout(out), probs


class T5LayerCrossAttention(nn.Module):
    def __init__(self, config: T5Config, layer_idx: int) -> None:
        super().__init__()
        self.EncDecAttention = T5Attention(config, False, True, layer_idx, is_cross_attention=True)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden_states: Tensor, encoder_states: Tensor | None, bias: Tensor | None,
                cache: EncoderDecoderCache | None, head_mask: Tensor | None,
                output_attentions: bool) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        normed = self.layer_norm(hidden_states)
        out, probs = self.EncDecAttention(normed, bias, encoder_states, cache, head_mask, output_attentions)
        return hidden_states + self.dropout(out), probs


class T5Block(nn.Module):
    """`layer[0]` self-attention, (decoder) `layer[1]` cross-attention, `layer[-1]` feed-forward."""

    def __init__(self, config: T5Config, has_relative_bias: bool, is_decoder: bool, layer_idx: int) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_bias, is_decoder, layer_idx)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config, layer_idx))
        self.layer.append(T5LayerFF(config))

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None,
        encoder_states: torch.Tensor | None,
        cross_bias: torch.Tensor | None,
        cache: EncoderDecoderCache | None,
        head_mask: torch.Tensor | None,
        cross_head_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        hidden_states, probs = self.layer[0](hidden_states, bias, cache, head_mask, output_attentions)
        hidden_states = _clamp_fp16(hidden_states)
        cross_probs = None
        if self.is_decoder and (encoder_states is not None or _has_cross(cache, self.layer[1])):
            hidden_states, cross_probs = self.layer[1](
                hidden_states, encoder_states, cross_bias, cache, cross_head_mask, output_attentions
            )
            hidden_states = _clamp_fp16(hidden_states)
        return _clamp_fp16(self.layer[-1](hidden_states)), probs, cross_probs


def _has_cross(cache: EncoderDecoderCache | None, cross_layer: T5LayerCrossAttention) -> bool:
    return cache is not None and cache.cross_keys[cross_layer.EncDecAttention.layer_idx] is not None


def _padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """2-D 1/0 mask `[B, T]` → additive `[B, 1, 1, T]`: 0 where attended, the dtype's min where masked."""
    if mask is None:
        return None
    keep = mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def _causal_bias(
    mask: torch.Tensor | None, query_positions: torch.Tensor, key_length: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive causal (+ padding) mask `[B|1, 1, S, T]`: key `j` is seen by query `i` if `j <= position[i]`.

    Like transformers, a fully masked row (a query at a padded position) keeps finite, equal scores, so its
    output is an average and never NaN.
    """
    keys = torch.arange(key_length, device=query_positions.device)
    allowed = (keys[None, :] <= query_positions[:, None])[None, None]  # [1, 1, S, T]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :key_length].to(device=allowed.device, dtype=torch.bool)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def _layer_head_masks(head_mask: torch.Tensor | None, num_layers: int, dtype: torch.dtype) -> list[Any]:
    """transformers' `get_head_mask`: `[H]` or `[L, H]` of 1/0 → per layer `[1, H, 1, 1]` (or None)."""
    if head_mask is None:
        return [None] * num_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, :].expand(num_layers, -1)
    return [m.to(dtype)[None, :, None, None] for m in head_mask]  # [1, H, 1, 1] each


class T5Stack(nn.Module):
    """Encoder or decoder: embeddings (shared), `num_layers` blocks, final norm; the first block's position
    bias is computed once per forward and added in every block ("shared across layers")."""

    main_input_name = "input_ids"

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.is_decoder = is_decoder
        num_layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList([T5Block(config, i == 0, is_decoder, i) for i in range(num_layers)])
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embed_tokens = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        cross_attn_head_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple[Any, ...]:
        """transformers' `T5Stack.forward`; the decoder runs `S` tokens after the cache's `past` ones.

        Args:
            input_ids: `[B, S]` (or `inputs_embeds` `[B, S, E]`).
            attention_mask: `[B, S]` (encoder) or `[B, past + S]` (decoder) with 1 for real tokens.
            encoder_hidden_states, encoder_attention_mask: `[B, S_enc, E]`, `[B, S_enc]` (decoder only).
            past_key_values: decoder only: None, an `EncoderDecoderCache`, a `KVCache` or the legacy tuple.
            use_cache: decoder only: create a (growing) cache when none is given.
            cache_position: absolute decoder positions `[S]`; default `past .. past + S - 1`.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            prefix = "decoder_" if self.is_decoder else ""
            raise ValueError(f"You have to specify exactly one of {prefix}input_ids or {prefix}inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids.view(-1, input_ids.shape[-1]))  # [B, S, E]
        batch, seq = inputs_embeds.shape[:2]
        device, dtype = inputs_embeds.device, inputs_embeds.dtype
        first = self.block[0].layer[0].SelfAttention

        cache = None
        if self.is_decoder:
            use_cache = cfg.use_cache if use_cache is None else use_cache
            cache = as_encoder_decoder_cache(past_key_values)
            if cache is None and use_cache:
                cache = EncoderDecoderCache(KVCache(len(self.block), batch, cfg.num_heads, cfg.d_kv, seq,
                                                    dtype=dtype, device=device))  # fmt: skip
        past = cache.get_seq_length() if cache is not None else 0
        if cache_position is None:
            cache_position = torch.arange(past, past + seq, device=device)
        total = past + seq
        position_bias = first.compute_bias(cache_position, total)  # [1, H, S, T]
        if self.is_decoder:  # bias [B|1, H, S, T], cross_bias [B, 1, 1, S_enc] or None
            bias = position_bias + _causal_bias(attention_mask, cache_position, total, dtype)
            cross_bias = _padding_bias(encoder_attention_mask, dtype)
        else:  # bias [B|1, H, S, S]
            mask_bias = _padding_bias(attention_mask, dtype)
            bias = position_bias if mask_bias is None else position_bias + mask_bias
            cross_bias = None
        head_masks = _layer_head_masks(head_mask, len(self.block), dtype)
        cross_head_masks = _layer_head_masks(cross_attn_head_mask, len(self.block), dtype)

        hidden_states = self.dropout(inputs_embeds)
        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        all_attn: tuple[torch.Tensor, ...] | None = () if output_attentions else None
        all_cross: tuple[torch.Tensor, ...] | None = () if output_attentions and self.is_decoder else None
        for i, block in enumerate(self.block):
            if all_hidden is not None:
                all_hidden += (hidden_states,)
            hidden_states, probs, cross_probs = block(
                hidden_states, bias, encoder_hidden_states, cross_bias, cache, head_masks[i],
                cross_head_masks[i], output_attentions,
            )  # fmt: skip
            if all_attn is not None:
                all_attn += (probs,)
            if all_cross is not None:
                all_cross += (cross_probs,)
        hidden_states = self.dropout(self.final_layer_norm(hidden_states))
        if all_hidden is not None:
            all_hidden += (hidden_states,)
        if cache is not None:
            cache.self_attention_cache.advance(seq)

        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            past_key_values=cache,
            hidden_states=all_hidden,
            attentions=all_attn,
            cross_attentions=all_cross,
        )
        return out if return_dict else out.to_tuple()


class EncoderDecoderCache:
    """Decoder cache of an encoder-decoder model: growing self-attention K/V and fixed cross-attention K/V.

    Steps:
        1. `self_attention_cache` (a `KVCache`, `[B, H, T_max, D]` per layer) receives `S` positions per
           forward and advances once after the last layer.
        2. `cross_keys[i]` / `cross_values[i]` (`[B, H, S_enc, D]`) are None until decoder layer `i` first
           runs; it then projects the encoder states once and stores them here; later steps reuse them.

    It answers transformers' `EncoderDecoderCache` surface user code touches: `get_seq_length()`, `len()`,
    `cache[i] -> (self_k, self_v, cross_k, cross_v)`, `to_legacy_cache()`, `from_legacy_cache()`, plus
    `reorder(index)` (beam search: rows of both parts follow their beams).
    """

    def __init__(
        self,
        self_attention_cache: KVCache,
        cross_keys: list[torch.Tensor | None] | None = None,
        cross_values: list[torch.Tensor | None] | None = None,
    ) -> None:
        num_layers = len(self_attention_cache)
        self.self_attention_cache = self_attention_cache
        self.cross_keys: list[torch.Tensor | None] = (
            list(cross_keys) if cross_keys is not None else [None] * num_layers
        )
        self.cross_values: list[torch.Tensor | None] = (
            list(cross_values) if cross_values is not None else [None] * num_layers
        )

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Decoder positions seen so far."""
        return self.self_attention_cache.get_seq_length()

    def reorder(self, index: torch.Tensor) -> None:
        """Gather rows `index` `[B]` of the self- and cross-attention K/V (row i continues row index[i])."""
        self.self_attention_cache.reorder(index)
        for tensors in (self.cross_keys, self.cross_values):
            for i, tensor in enumerate(tensors):
                if tensor is not None:
                    tensors[i] = tensor.index_select(0, index.to(tensor.device))

    def __len__(self) -> int:
        return len(self.self_attention_cache)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor | None, ...]:
        keys, values = self.self_attention_cache[layer_idx]
        return keys, values, self.cross_keys[layer_idx], self.cross_values[layer_idx]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor | None, ...], ...]:
        """transformers' legacy format: per layer `(self_k, self_v, cross_k, cross_v)` `[B, H, *, D]`."""
        return tuple(self)

    @classmethod
    def from_legacy_cache(cls, past: tuple[tuple[torch.Tensor, ...], ...]) -> EncoderDecoderCache:
        """From per-layer `(self_k, self_v[, cross_k, cross_v])` tuples (self-attention K/V copied)."""
        self_cache = KVCache.from_legacy_cache(tuple((layer[0], layer[1]) for layer in past))
        cross_keys = [layer[2] if len(layer) > 2 else None for layer in past]
        cross_values = [layer[3] if len(layer) > 2 else None for layer in past]
        return cls(self_cache, cross_keys, cross_values)


def as_encoder_decoder_cache(past_key_values: Any) -> EncoderDecoderCache | None:
    """None, an `EncoderDecoderCache`, a `KVCache` (self-attention only) or the legacy tuple → the cache."""
    if past_key_values is None or isinstance(past_key_values, EncoderDecoderCache):
        return past_key_values
    if isinstance(past_key_values, KVCache):
        return EncoderDecoderCache(past_key_values)
    if isinstance(past_key_values, (tuple, list)):
        return EncoderDecoderCache.from_legacy_cache(tuple(past_key_values)) if len(past_key_values) else None
    raise TypeError(
        "past_key_values must be None, an EncoderDecoderCache, a KVCache or a tuple of (self_k, self_v, "
        f"cross_k, cross_v) per layer; got {type(past_key_values).__name__}."
    )


class T5PreTrainedModel(PreTrainedModel):
    """Loading rules and Mesh TensorFlow initialisation shared by the T5 classes."""

    config_class = T5Config
    base_model_prefix = "transformer"
    # Old checkpoints hold an unused relative bias on the first cross-attention; transformers ignores it too.
    _keys_to_ignore_on_load_unexpected = [
        r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias"
    ]

    @classmethod
    def _convert_state_dict(cls, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return convert.from_pt(arrays)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' T5 init: N(0, factor * fan-in^-0.5) per projection, embeddings N(0, factor)."""
        cfg = self.config
        factor = cfg.initializer_factor
        d_model, d_ff, d_kv, heads = cfg.d_model, cfg.d_ff, cfg.d_kv, cfg.num_heads
        if isinstance(module, T5LayerNorm):
            module.weight.data.fill_(factor * 1.0)
        elif isinstance(module, T5PreTrainedModel):
            module.shared.weight.data.normal_(mean=0.0, std=factor * 1.0)
            if hasattr(module, "lm_head") and not self.config.tie_word_embeddings:
                module.lm_head.weight.data.normal_(mean=0.0, std=factor * 1.0)
        elif isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
            for name in ("wi", "wi_0", "wi_1"):
                if hasattr(module, name):
                    getattr(module, name).weight.data.normal_(mean=0.0, std=factor * d_model**-0.5)
            module.wo.weight.data.normal_(mean=0.0, std=factor * d_ff**-0.5)
        elif isinstance(module, T5Attention):
            # Mesh TensorFlow folds the 1/sqrt(D) score scaling into the init of q.
            module.q.weight.data.normal_(mean=0.0, std=factor * (d_model * d_kv) ** -0.5)
            module.k.weight.data.normal_(mean=0.0, std=factor * d_model**-0.5)
            module.v.weight.data.normal_(mean=0.0, std=factor * d_model**-0.5)
            module.o.weight.data.normal_(mean=0.0, std=factor * (heads * d_kv) ** -0.5)
            if module.has_relative_attention_bias:
                module.relative_attention_bias.weight.data.normal_(mean=0.0, std=factor * d_model**-0.5)

    def _prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Prune encoder self-attention heads `{layer: [heads]}` (transformers 4.57 prunes the same ones
        in T5EncoderModel; its T5Model / T5ForConditionalGeneration versions raise, ours work)."""
        for layer, heads in heads_to_prune.items():
            self.encoder.block[layer].layer[0].SelfAttention.prune_heads(heads)

    def _shift_right(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: `decoder_start_token_id` first, labels shifted right, -100 → pad."""
        start, pad = self.config.decoder_start_token_id, self.config.pad_token_id
        if start is None:
            raise ValueError(
                "self.model.config.decoder_start_token_id has to be defined. In T5 it is usually set to the "
                "pad_token_id. See T5 docs for more information."
            )
        if pad is None:
            raise ValueError("self.model.config.pad_token_id has to be defined.")
        shifted = input_ids.new_zeros(input_ids.shape)
        shifted[..., 1:] = input_ids[..., :-1].clone()
        shifted[..., 0] = start
        return shifted.masked_fill(shifted == -100, pad)

    def _build_stacks(self, config: T5Config, decoder: bool = True) -> None:
        """`shared`, then `encoder` (and `decoder`) whose `embed_tokens` is the same module as `shared`."""
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        if decoder:
            self.decoder = T5Stack(config, self.shared, is_decoder=True)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.shared = new_embeddings
        self.encoder.set_input_embeddings(new_embeddings)
        if hasattr(self, "decoder"):
            self.decoder.set_input_embeddings(new_embeddings)

    def get_encoder(self) -> T5Stack:
        return self.encoder

    def get_decoder(self) -> T5Stack:
        return self.decoder

    # -- engine-facing -----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Decoder layers (the ones the cache holds)."""
        return self.config.num_decoder_layers

    @property
    def num_kv_heads(self) -> int:
        return self.config.num_heads

    @property
    def head_dim(self) -> int:
        return self.config.d_kv

    def new_cache(self, batch_size: int, max_length: int) -> EncoderDecoderCache:
        """An empty decoder cache: self-attention K/V preallocated for `max_length` decoder tokens (model
        dtype and device); the cross-attention K/V are filled by the first decoder forward."""
        self_cache = KVCache(self.num_layers, batch_size, self.num_kv_heads, self.head_dim, max_length,
                             dtype=self.dtype, device=self.device)  # fmt: skip
        return EncoderDecoderCache(self_cache)

    def encode(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        """Run the encoder once: `last_hidden_state [B, S_enc, E]` (+ hidden states / attentions if asked)."""
        out = self.encoder(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           return_dict=True)  # fmt: skip
        return BaseModelOutput(last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states,
                               attentions=out.attentions)  # fmt: skip

    def _decoder_head_mask(self, head_mask: Tensor | None, decoder_head_mask: Tensor | None) -> Tensor | None:
        """transformers' deprecated fallback: `head_mask` also masks the decoder when the depths agree."""
        if head_mask is None or decoder_head_mask is not None:
            return decoder_head_mask
        if self.config.num_layers != self.config.num_decoder_layers:
            return None
        warnings.warn(
            "`head_mask` was split into `head_mask` and `decoder_head_mask`; copying `head_mask` to the "
            "decoder is deprecated (transformers behaviour).", FutureWarning, stacklevel=3,
        )  # fmt: skip
        return head_mask

    def _encoder_outputs(
        self, input_ids: Tensor | None, attention_mask: Tensor | None, inputs_embeds: Tensor | None,
        head_mask: Tensor | None, encoder_outputs: Any, cache: EncoderDecoderCache | None,
        output_attentions: bool | None, output_hidden_states: bool | None,
    ) -> Any:  # fmt: skip
        """`encoder_outputs` as a ModelOutput: given (a tuple is wrapped), computed, or empty when a cache
        already holds every cross-attention K/V and no encoder input was passed (decode steps)."""
        if isinstance(encoder_outputs, (tuple, list)):
            return BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        if encoder_outputs is not None:
            return encoder_outputs
        cross_ready = cache is not None and all(k is not None for k in cache.cross_keys)
        if input_ids is None and inputs_embeds is None and cross_ready:
            return BaseModelOutput()
        return self.encoder(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, head_mask=head_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )  # fmt: skip


class T5Model(T5PreTrainedModel):
    """The bare T5 encoder-decoder: decoder hidden states, no head.

    Example:
        >>> cfg = T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=100)
        >>> model = T5Model(cfg)
        >>> out = model(torch.tensor([[5, 6, 1]]), decoder_input_ids=torch.tensor([[0, 5]]))
        >>> out.last_hidden_state.shape
        torch.Size([1, 2, 64])
    """

    _tied_weights_keys = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self._build_stacks(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        decoder_head_mask: torch.Tensor | None = None,
        cross_attn_head_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqModelOutput | tuple[Any, ...]:
        """Encode `input_ids` (or take `encoder_outputs`), then decode.

        Arguments as `T5ForConditionalGeneration.forward` (without `labels`).
        """
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        decoder_head_mask = self._decoder_head_mask(head_mask, decoder_head_mask)
        cache = as_encoder_decoder_cache(past_key_values)
        enc = self._encoder_outputs(
            input_ids, attention_mask, inputs_embeds, head_mask, encoder_outputs, cache, output_attentions,
            output_hidden_states,
        )  # fmt: skip
        dec = self.decoder(
            decoder_input_ids, attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=enc.last_hidden_state, encoder_attention_mask=attention_mask,
            head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask, past_key_values=cache,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, cache_position=cache_position,
        )  # fmt: skip
        out = Seq2SeqModelOutput(
            last_hidden_state=dec.last_hidden_state,
            past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states,
            decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions,
            encoder_last_hidden_state=enc.last_hidden_state,
            encoder_hidden_states=enc.hidden_states,
            encoder_attentions=enc.attentions,
        )
        return out if return_dict else out.to_tuple()


class T5ForConditionalGeneration(T5PreTrainedModel, GenerationMixin):
    """T5 with its language-modeling head (tied to `shared` and scaled by `d_model**-0.5` when
    `tie_word_embeddings`, as T5 v1.0; untied and unscaled for T5 v1.1 / Flan-T5).

    Example:
        >>> cfg = T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=100,
        ...                decoder_start_token_id=0)
        >>> model = T5ForConditionalGeneration(cfg).eval()
        >>> out = model(torch.tensor([[5, 6, 1]]), labels=torch.tensor([[7, 1]]))
        >>> out.logits.shape, out.loss.ndim
        (torch.Size([1, 2, 100]), 0)
    """

    _tied_weights_keys = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"]

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.model_dim = config.d_model
        self._build_stacks(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        decoder_head_mask: torch.Tensor | None = None,
        cross_attn_head_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput | tuple[Any, ...]:
        """Encode (unless `encoder_outputs` is given), decode `S` tokens, project: logits `[B, S, V]`.

        Args:
            input_ids, attention_mask: encoder tokens `[B, S_enc]` and their 1/0 padding mask (also the
                cross-attention mask: pass it on every decoder step).
            decoder_input_ids: `[B, S]` (default: `labels` shifted right after `decoder_start_token_id`).
            decoder_attention_mask: `[B, past + S]`, 1 for real decoder tokens (causality is added inside).
            head_mask, decoder_head_mask, cross_attn_head_mask: `[H]` or `[L, H]` of 1/0 (eager attention).
            encoder_outputs: a `BaseModelOutput` or a tuple `(last_hidden_state, ...)`; skips the encoder.
                With neither it nor `input_ids` / `inputs_embeds`, a cache already holding the cross K/V is
                enough (the encoder is not rerun; `encoder_last_hidden_state` is then None).
            past_key_values: None, an `EncoderDecoderCache` (`new_cache`), a `KVCache` (wrapped; use the
                returned cache afterwards) or transformers' legacy 4-tuples per layer. Updated in place.
            labels: `[B, S]` targets (-100 ignored) → mean cross entropy `loss` (no shift: labels are aligned
                with the decoder outputs).
            use_cache: return the cache (a growing one is created when none is given); default
                `config.use_cache`.
            cache_position: absolute decoder positions `[S]` (relative bias); default `past .. past + S - 1`.
            output_attentions, output_hidden_states, return_dict: as in transformers.
        """
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        decoder_head_mask = self._decoder_head_mask(head_mask, decoder_head_mask)
        cache = as_encoder_decoder_cache(past_key_values)
        enc = self._encoder_outputs(
            input_ids, attention_mask, inputs_embeds, head_mask, encoder_outputs, cache, output_attentions,
            output_hidden_states,
        )  # fmt: skip
        dec = self.decoder(
            decoder_input_ids, attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=enc.last_hidden_state, encoder_attention_mask=attention_mask,
            head_mask=decoder_head_mask, cross_attn_head_mask=cross_attn_head_mask, past_key_values=cache,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, cache_position=cache_position,
        )  # fmt: skip
        sequence_output = dec.last_hidden_state  # [B, S, E]
        if self.config.tie_word_embeddings:  # Mesh TensorFlow rescales before the tied projection
            sequence_output = sequence_output * (self.model_dim**-0.5)
        logits = self.lm_head(sequence_output)  # [B, S, V]
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        out = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states,
            decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions,
            encoder_last_hidden_state=enc.last_hidden_state,
            encoder_hidden_states=enc.hidden_states,
            encoder_attentions=enc.attentions,
        )
        return out if return_dict else out.to_tuple()

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self._shift_right(labels)


class T5EncoderModel(T5PreTrainedModel):
    """The T5 encoder alone (embeddings for retrieval, T5-XXL text encoders of diffusion models).

    Example:
        >>> cfg = T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=100)
        >>> model = T5EncoderModel(cfg)
        >>> model(torch.tensor([[5, 6, 1]])).last_hidden_state.shape
        torch.Size([1, 3, 64])
    """

    _tied_weights_keys = ["encoder.embed_tokens.weight"]
    _keys_to_ignore_on_load_unexpected = [r"decoder"]

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self._build_stacks(config, decoder=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple[Any, ...]:
        """The encoder stack's output (transformers returns the stack's output type unchanged)."""
        return self.encoder(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, head_mask=head_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=return_dict,
        )  # fmt: skip
