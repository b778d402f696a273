"""LLaMA in PyTorch, parameter for parameter transformers' `LlamaModel` / `LlamaForCausalLM`.

Read top to bottom: RMSNorm → rotary tables → MLP → attention (GQA) → decoder layer → model → LM head.
Parameter names match transformers, so checkpoints load in either library unchanged.

Engine contract (both classes): `forward(...)` HF-style, plus `num_layers`, `num_kv_heads`, `head_dim` and
`new_cache(batch_size, max_length)`, a `KVCache` preallocated in the model's dtype and device. A forward
of `S` tokens writes cache positions `[past, past + S)` and advances the cache once.

Shapes: `B` batch, `S` new tokens, `T` past + new tokens, `H` query heads, `H_kv` key/value heads,
`D` head dim, `E` hidden, `V` vocab.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pyengine.backends.torch import decode
from pyengine.backends.torch.attention import as_kv_cache, attention, build_attention_mask
from pyengine.backends.torch.cache import KVCache
from pyengine.backends.torch.functional import causal_lm_loss, get_activation
from pyengine.generation.utils import GenerationMixin
from pyengine.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from pyengine.modeling_utils import PreTrainedModel
from pyengine.models.llama import convert
from pyengine.models.llama.config import SUPPORTED_ROPE_TYPES, LlamaConfig


class LlamaRMSNorm(nn.Module):
    """RMSNorm computed in float32 whatever the input dtype (as transformers), scaled in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def rope_inv_freq(config: LlamaConfig) -> torch.Tensor:
    """Inverse RoPE frequencies `[D/2]` in float32, with "linear" or "llama3" scaling applied.

    Same float32 operations, in the same order, as transformers' `ROPE_INIT_FUNCTIONS`, so the tables
    match bit for bit.
    """
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise NotImplementedError(
            f"rope_scaling type {rope_type!r} is not supported yet; supported: {SUPPORTED_ROPE_TYPES}."
        )
    dim = int(config.head_dim * getattr(config, "partial_rotary_factor", 1.0))
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":  # Llama 3.1: long wavelengths slowed by `factor`, a smooth ramp in between
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
        smooth = (context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < context / high) * ~(wavelen > context / low)
        return torch.where(is_medium, smoothed, scaled)
    return inv_freq


class LlamaRotaryEmbedding(nn.Module):
    """cos/sin tables `[T_max, D]` in float32, built once and extended by doubling when a sequence outgrows them.

    The tables are plain tensors, not buffers, so `model.to(bfloat16)` never rounds them; they follow the
    input's device on first use. `position * inv_freq` is one float32 product per entry, the same value
    transformers gets from its per-call `inv_freq @ position_ids` (a matmul with inner dimension 1).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.inv_freq = rope_inv_freq(config)  # [D/2]
        self.cos_table, self.sin_table = self._tables(min(config.max_position_embeddings, 4096))

    def _tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, dtype=torch.int64, device=self.inv_freq.device).float()
        freqs = positions[:, None] * self.inv_freq[None, :]  # [T_max, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T_max, D]
        return emb.cos(), emb.sin()

    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, max_position: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `[B, S, D]` in `x`'s dtype for `position_ids` `[B, S]` (all below `max_position`)."""
        if max_position > self.cos_table.shape[0]:
            self.cos_table, self.sin_table = self._tables(max(max_position, 2 * self.cos_table.shape[0]))
        if self.cos_table.device != x.device:
            self.inv_freq = self.inv_freq.to(x.device)
            self.cos_table, self.sin_table = self.cos_table.to(x.device), self.sin_table.to(x.device)
        return self.cos_table[position_ids].to(x.dtype), self.sin_table[position_ids].to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate `q [B, H, S, D]` and `k [B, H_kv, S, D]` by the positions' angles (cos/sin `[B, S, D]`)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, S, D]
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class LlamaMLP(nn.Module):
    """Gated MLP: down(act(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    """Self-attention with RoPE and grouped key/value heads (`H_kv` divides `H`)."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        if config.num_attention_heads % config.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads.")
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq = hidden_states.shape[:2]
        shape = (batch, seq, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # [B, H, S, D]
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)  # [B, H_kv, S, D]
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)  # [B, H_kv, S, D]
        query, key = apply_rotary_pos_emb(query, key, *cos_sin)
        if cache is not None and hasattr(cache, "attend"):  # the cache attends itself (batch engine's paged view)
            out = cache.attend(self.layer_idx, query, key, value, self.scaling).transpose(1, 2)  # [B, S, H, D]
            return self.o_proj(out.reshape(batch, seq, -1)), None
        if cache is not None:
            key, value = cache.update(self.layer_idx, key, value)  # [B, H_kv, T, D]
        eager = output_attentions or self.config._attn_implementation == "eager"
        dropout_p = self.config.attention_dropout if self.training else 0.0
        out, probs = attention(query, key, value, mask, is_causal, self.scaling, dropout_p, eager)  # [B, S, H, D]
        return self.o_proj(out.reshape(batch, seq, -1)), probs


class LlamaDecoderLayer(nn.Module):
    """Pre-norm layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, probs = self.self_attn(
            self.input_layernorm(hidden_states), cos_sin, mask, is_causal, cache, output_attentions
        )
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, probs


class LlamaPreTrainedModel(PreTrainedModel):
    """Loading rules shared by the LLaMA classes (weight init: the generic transformers one)."""

    config_class = LlamaConfig
    base_model_prefix = "model"
    # Old checkpoints stored a RoPE buffer per layer; transformers 4.57 ignores it too.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    @classmethod
    def _convert_state_dict(cls, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return convert.from_pt(arrays)

    # -- engine-facing -----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_kv_heads(self) -> int:
        return self.config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        return self.config.head_dim

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty KV cache for `batch_size` rows and `max_length` tokens, in this model's dtype and device."""
        return KVCache(self.num_layers, batch_size, self.num_kv_heads, self.head_dim, max_length,
                       dtype=self.dtype, device=self.device)  # fmt: skip


class LlamaModel(LlamaPreTrainedModel):
    """Token embeddings, `num_hidden_layers` decoder layers, final RMSNorm; RoPE tables shared by all layers."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: KVCache | tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache_position: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple[Any, ...]:
        """Run the stack over `S` new tokens (argument order as transformers' `LlamaModel.forward`).

        Args:
            input_ids: `[B, S]` token ids (or `inputs_embeds` `[B, S, E]`).
            attention_mask: `[B, T]` with 1 for real tokens, 0 for padding (past + new positions).
            position_ids: `[B, S]` RoPE positions; default `cache_position` (generate passes them from the mask).
            past_key_values: None, a `KVCache`, or transformers' legacy tuple of `(k, v)` `[B, H_kv, T, D]`.
            cache_position: absolute positions of the new tokens `[S]`; default `past .. past + S - 1`.
            use_cache: return the cache (created, growing, when none is given); default `config.use_cache`.
            output_attentions, output_hidden_states, return_dict: as in transformers.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = cfg.use_cache if use_cache is None else use_cache
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # [B, S, E]
        batch, seq = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        cache = as_kv_cache(past_key_values)
        if cache is None and use_cache:
            cache = self.new_cache(batch, seq)
        past = cache.get_seq_length() if cache is not None else 0
        max_position = past + seq  # RoPE table length needed; known without a device sync
        if position_ids is None:
            if cache_position is None:
                cache_position = torch.arange(past, past + seq, device=device)
            position_ids = cache_position.unsqueeze(0)  # [1, S]
        elif position_ids.device.type == "cpu":  # explicit positions may run ahead; checking is free on CPU
            max_position = max(max_position, int(position_ids.max()) + 1)
        cos_sin = self.rotary_emb(inputs_embeds, position_ids, max_position)  # [B, S, D] each
        mask, is_causal = build_attention_mask(attention_mask, past, seq, device)

        hidden_states = inputs_embeds
        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        all_attn: tuple[torch.Tensor, ...] | None = () if output_attentions else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden += (hidden_states,)
            hidden_states, probs = layer(hidden_states, cos_sin, mask, is_causal, cache, output_attentions)
            if all_attn is not None:
                all_attn += (probs,)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden += (hidden_states,)
        if cache is not None:
            cache.advance(seq)

        out = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=cache if use_cache else None,
            hidden_states=all_hidden,
            attentions=all_attn,
        )
        return out if return_dict else out.to_tuple()


class LlamaDecodePath:
    """The decode-only forward of `LlamaForCausalLM`: one new token per row (pyengine/backends/torch/decode.py).

    Built once per model and weights dtype: q|k|v and gate|up grouped into one product each (the float32
    parameters are used in place; bf16 / int8 copies are made here), activation buffers reused across
    steps. Per layer: RMSNorm → q|k|v → decode_attention (RoPE, cache write, attention over the cache) →
    o_proj added into the residual in place → RMSNorm → gate|up → act(gate) * up → down_proj added in place;
    with a KVCache, SiLU and our kernel for every product, all layers are one `decode_layers` call.
    Logits equal the reference forward's within the float32 tolerance.
    """

    def __init__(self, model: LlamaForCausalLM, weights_dtype: str) -> None:
        cfg = model.config
        self.weights_dtype = weights_dtype
        self.source = self.fingerprint(model)
        self.num_heads, self.kv_heads, self.dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.intermediate, self.eps = cfg.intermediate_size, cfg.rms_norm_eps
        self.rope = model.model.rotary_emb
        self.act = model.model.layers[0].mlp.act_fn
        # decode_layers computes silu itself; another activation takes the op-by-op path.
        self.fused_layers = self.act is torch.nn.functional.silu
        self.layers = []
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight.detach(),
                decode.Linear([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
                              [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], weights_dtype=weights_dtype),
                decode.Linear([a.o_proj.weight], [a.o_proj.bias], weights_dtype=weights_dtype),
                layer.post_attention_layernorm.weight.detach(),
                decode.Linear([m.gate_proj.weight, m.up_proj.weight], [m.gate_proj.bias, m.up_proj.bias],
                              weights_dtype=weights_dtype),
                decode.Linear([m.down_proj.weight], [m.down_proj.bias], weights_dtype=weights_dtype),
                a.scaling,
            ))  # fmt: skip
        self.norm = model.model.norm.weight.detach()
        self.embed = model.model.embed_tokens.weight.detach()
        self.lm_head = decode.Head(model.lm_head.weight, weights_dtype=weights_dtype)
        self.workspace = decode.Workspace()
        decode.place_on_hugepages([p for layer in self.layers for p in layer if isinstance(p, decode.Linear)]
                                  + [self.lm_head])  # fmt: skip
        # decode_layers' arguments, every layer's back to back (after the copies found their final place).
        norms_in, qkv_p, o_p, norms_post, gate_up_p, down_p, scales = zip(*self.layers)
        self.stack = (list(norms_in), list(norms_post), *map(decode.stack_projections, (qkv_p, o_p, gate_up_p, down_p)),
                      list(scales))  # fmt: skip

    @staticmethod
    def fingerprint(model: LlamaForCausalLM) -> tuple[int, ...]:
        """Where the weights live: a change (`.to()`, new parameters) rebuilds the path."""
        first, last = model.model.layers[0], model.model.layers[-1]
        return (model.model.embed_tokens.weight.data_ptr(), model.lm_head.weight.data_ptr(),
                first.self_attn.q_proj.weight.data_ptr(), last.mlp.down_proj.weight.data_ptr())  # fmt: skip

    def step(self, input_ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None,
             position_ids: torch.Tensor | None, top_logits: int | None = None) -> torch.Tensor:  # fmt: skip
        """Logits `[B, 1, V]` (float32) for one token per row `input_ids [B, 1]`; the cache advances by one.
        `top_logits=k`: only each row's k largest, -inf elsewhere (`decode.Head`)."""
        ops = decode._kernels()
        batch, past = input_ids.shape[0], cache.get_seq_length()
        H, H_kv, D, inter = self.num_heads, self.kv_heads, self.dim, self.intermediate
        if position_ids is None:
            positions = torch.full((batch,), past, dtype=torch.long)
        else:
            positions = position_ids.reshape(-1).to(torch.long).expand(batch).contiguous()  # [B]
        max_position = max(past + 1, int(positions.max()) + 1)
        if max_position > self.rope.cos_table.shape[0]:  # extend the tables as the reference forward does
            rope = self.rope
            rope.cos_table, rope.sin_table = rope._tables(max(max_position, 2 * rope.cos_table.shape[0]))
        cos, sin = self.rope.cos_table, self.rope.sin_table  # [T_pos, D]
        delegated = type(cache) is not KVCache  # a cache with attend(): the batch engine's paged view
        cos_sin = key_mask = rows = None
        if delegated:
            cos_sin = (cos[positions][:, None, None], sin[positions][:, None, None])  # [B, 1, 1, D]
        else:
            if past + 1 > cache.capacity:
                cache._grow(past + 1)
            key_mask = decode.key_mask_for(attention_mask, past + 1)  # [B, T]
            rows = cache.rows_for_decode()  # beams: where each row's positions live (KVCache.reorder)
        ws = self.workspace
        h, attn = ws.get("h", batch, self.embed.shape[1]), ws.get("attn", batch, H * D)
        qkv, gate_up = ws.get("qkv", batch, (H + 2 * H_kv) * D), ws.get("gate_up", batch, 2 * inter)
        x = self.embed.index_select(0, input_ids.reshape(-1))  # [B, E] residual stream, updated in place
        # One C++ call for all layers when their products run our kernel (they share weights dtype and rows),
        # over a KVCache or the batch engine's blocks.
        layout = decode.fused_layout(cache, delegated)
        if layout is not None and self.fused_layers and self.layers[0][1].uses_kernel(batch):
            norms_in, norms_post, qkv_p, o_p, gate_up_p, down_p, scales = self.stack
            keys, values, paged = layout
            ops.decode_layers(x, h, qkv, attn, gate_up, norms_in, norms_post, self.eps, qkv_p, o_p, gate_up_p, down_p,
                              keys, values, cos, sin, positions, past, key_mask, H, scales, rows, paged=paged)  # fmt: skip
        else:
            self._layers_op_by_op(x, h, qkv, attn, gate_up, cache, delegated, cos, sin, cos_sin, positions, past,
                                  key_mask, rows)  # fmt: skip
        ops.rms_norm_into(h, x, self.norm, self.eps)
        logits = torch.empty(batch, self.lm_head.out_features)  # fresh: callers may keep it
        self.lm_head(logits, h, top_logits=top_logits)
        cache.advance(1)
        return logits.view(batch, 1, -1)

    def _layers_op_by_op(self, x, h, qkv, attn, gate_up, cache, delegated, cos, sin, cos_sin, positions, past,
                         key_mask, rows) -> None:  # fmt: skip
        """The layers as separate ops: another activation than SiLU, library products, or a delegated cache."""
        ops = decode._kernels()
        H, H_kv, D, inter = self.num_heads, self.kv_heads, self.dim, self.intermediate
        for i, (norm_in, qkv_proj, o_proj, norm_post, gate_up_proj, down_proj, scale) in enumerate(self.layers):
            ops.rms_norm_into(h, x, norm_in, self.eps)
            qkv_proj(qkv, h)
            if delegated:
                decode.attend_delegated(cache, i, qkv, H, H_kv, D, cos_sin, scale, attn)
            else:
                ops.decode_attention(attn, qkv, cache.keys[i], cache.values[i], cos, sin, positions, past,
                                     key_mask, H, scale, rows)  # fmt: skip
            o_proj(x, attn, accumulate=True)
            ops.rms_norm_into(h, x, norm_post, self.eps)
            gate_up_proj(gate_up, h)
            gate = gate_up[:, :inter]  # [B, I]
            if self.act is torch.nn.functional.silu:
                torch.nn.functional.silu(gate, inplace=True)
            else:
                gate.copy_(self.act(gate))
            gate.mul_(gate_up[:, inter:])
            down_proj(x, gate, accumulate=True)


class LlamaForCausalLM(LlamaPreTrainedModel, decode.DecodePathMixin, GenerationMixin):
    """LLaMA with a language-modeling head (untied unless `config.tie_word_embeddings`).

    Decoding one token per row with a KVCache runs `LlamaDecodePath` (C++ kernels, reused buffers) unless
    `model.decode_path_enabled = False`; `model.quantize("bf16" | "int8")` makes it read lower-precision
    weight copies (see `DecodePathMixin.quantize`). Every other call runs the reference forward below.
    """

    _tied_weights_keys = ["lm_head.weight"]
    _decode_path_class = LlamaDecodePath

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: KVCache | tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        top_logits: int | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """`LlamaModel.forward` plus the head: logits `[B, S_kept, V]` in the model dtype.

        Args:
            labels: `[B, S]` next-token targets (shifted inside; -100 ignored) → `loss`.
            logits_to_keep: 0 keeps all positions; N keeps the last N; a tensor selects positions.
            top_logits: (pyengine) on the decode path, compute only each row's `top_logits` largest logits (ties
                included) and leave -inf elsewhere (`decode.Head`); generate() passes it when its decoding rule
                depends on those alone. None: every logit.
            (others): see `LlamaModel.forward`.
        """
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        decode.check_top_logits(top_logits)
        cache = decode.decode_cache(self, input_ids, past_key_values, inputs_embeds, labels, use_cache,
                                    output_attentions, output_hidden_states, logits_to_keep)  # fmt: skip
        if cache is not None:  # one token per row: the decode path
            logits = self.decode_path().step(input_ids, cache, attention_mask, position_ids, top_logits)
            out = CausalLMOutputWithPast(logits=logits, past_key_values=cache)
            return out if return_dict else out.to_tuple()
        outputs = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, cache_position=cache_position, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )  # fmt: skip
        hidden_states = outputs.last_hidden_state  # [B, S, E]
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept, :])  # [B, S_kept, V]
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()
