"""GPT-2 in Flax (flax.linen), parameter for parameter transformers 4.x's `FlaxGPT2Model` / `FlaxGPT2LMHeadModel`.

Read top to bottom: Conv1D → attention → MLP → block → blocks → model → LM head → the user classes.
Parameter paths match transformers' Flax GPT-2 (`transformer/h/0/attn/c_attn/kernel`, Conv1D kernels
`[out, in]`), so `flax_model.msgpack` files load in either library; `convert.py` maps them to PyTorch.

Engine contract (`FlaxGPT2LMHeadModel`): `init_cache(batch, max_length)` and
`_decode_step(params, input_ids [B, S], attention_mask [B, T], position_ids [B, S], cache, last_only)`
→ (logits `[B, S, V]` float32, or `[B, 1, V]` with last_only, cache). Shapes as in backends/jax/functional.py; E hidden, V vocab.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pyengine.backends.jax import functional as F
from pyengine.backends.jax import kernels
from pyengine.modeling_flax_utils import FlaxBaseModelOutput, FlaxCausalLMOutput, FlaxPreTrainedModel
from pyengine.models.gpt2 import convert
from pyengine.models.gpt2.config import GPT2Config


class FlaxConv1D(nn.Module):
    """GPT-2's linear layer; the kernel is stored `[out, in]` (transformers' Flax layout)."""

    features: int
    std: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> Any:
        kernel = self.param("kernel", jax.nn.initializers.normal(self.std), (self.features, x.shape[-1]))
        bias = self.param("bias", jax.nn.initializers.zeros, (self.features,))
        flat = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        y = kernels.linear(flat, kernel.astype(self.dtype), bias.astype(self.dtype))  # [M, out]
        return y.reshape(*x.shape[:-1], self.features)


class FlaxGPT2Attention(nn.Module):
    config: GPT2Config
    layer_idx: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.embed_dim, self.num_heads = c.n_embd, c.n_head
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"`n_embd` ({self.embed_dim}) must be divisible by `n_head` ({self.num_heads}).")
        scale = self.head_dim**-0.5 if c.scale_attn_weights else 1.0
        self.scale = scale / float(self.layer_idx + 1) if c.scale_attn_by_inverse_layer_idx else scale
        self.c_attn = FlaxConv1D(3 * self.embed_dim, c.initializer_range, self.dtype)
        self.c_proj = FlaxConv1D(self.embed_dim, c.initializer_range, self.dtype)

    def __call__(self, x: Any, mask: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        batch, seq = x.shape[:2]
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)  # [B, S, E] each
        shape = (batch, seq, self.num_heads, self.head_dim)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        if layer_cache is not None:
            layer_cache = F.write_cache(layer_cache, k, v, index)
            k, v = layer_cache
        if layer_cache is not None and seq == 1:  # a decode step: only the visible slots (C++ kernel)
            out = kernels.attend_cached(q[:, 0], k, v, mask[:, 0, 0], self.scale)[:, None]  # [B, 1, H, D]
        else:
            out, _ = F.attend(q, k, v, mask, self.scale, heads_first=layer_cache is not None)
        return self.c_proj(out.reshape(batch, seq, self.embed_dim)), layer_cache


class FlaxGPT2MLP(nn.Module):
    config: GPT2Config
    intermediate_size: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.c_fc = FlaxConv1D(self.intermediate_size, self.config.initializer_range, self.dtype)
        self.c_proj = FlaxConv1D(self.config.n_embd, self.config.initializer_range, self.dtype)
        self.act = F.get_activation(self.config.activation_function)

    def __call__(self, x: Any) -> Any:
        return self.c_proj(self.act(self.c_fc(x)))


class FlaxGPT2Block(nn.Module):
    config: GPT2Config
    layer_idx: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.ln_1 = nn.LayerNorm(epsilon=c.layer_norm_epsilon, dtype=self.dtype)
        self.attn = FlaxGPT2Attention(c, self.layer_idx, self.dtype)
        self.ln_2 = nn.LayerNorm(epsilon=c.layer_norm_epsilon, dtype=self.dtype)
        self.mlp = FlaxGPT2MLP(c, c.n_inner if c.n_inner is not None else 4 * c.n_embd, self.dtype)

    def __call__(self, x: Any, mask: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        attn, layer_cache = self.attn(self.ln_1(x), mask, layer_cache, index)
        x = x + attn
        return x + self.mlp(self.ln_2(x)), layer_cache


class FlaxGPT2BlockCollection(nn.Module):
    """The `h` list: blocks named "0", "1", ... (transformers' parameter paths)."""

    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.blocks = [FlaxGPT2Block(self.config, i, self.dtype, name=str(i)) for i in range(self.config.n_layer)]

    def __call__(self, x: Any, mask: Any, cache: Any) -> tuple[Any, Any]:
        index = 0 if cache is None else cache["index"]
        layers = []
        for i, block in enumerate(self.blocks):
            x, layer = block(x, mask, None if cache is None else cache["layers"][i], index)
            layers.append(layer)
        if cache is None:
            return x, None
        return x, {"index": index + x.shape[1], "layers": tuple(layers)}


class FlaxGPT2Module(nn.Module):
    """Token + learned position embeddings, the blocks, final LayerNorm → hidden states `[B, S, E]`."""

    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        init = jax.nn.initializers.normal(c.initializer_range)
        self.wte = nn.Embed(c.vocab_size, c.n_embd, embedding_init=init, dtype=self.dtype)
        self.wpe = nn.Embed(c.n_positions, c.n_embd, embedding_init=init, dtype=self.dtype)
        self.h = FlaxGPT2BlockCollection(c, self.dtype)
        self.ln_f = nn.LayerNorm(epsilon=c.layer_norm_epsilon, dtype=self.dtype)

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None) -> tuple[Any, Any]:
        batch, seq = input_ids.shape
        index = 0 if cache is None else cache["index"]
        keys = seq if cache is None else F.cache_length(cache)
        if position_ids is None:
            position_ids = jnp.broadcast_to(index + jnp.arange(seq), (batch, seq))
        mask = F.attention_mask_4d(attention_mask, batch, seq, keys, index, causal=True)
        x = self.wte(input_ids) + self.wpe(position_ids)
        x, cache = self.h(x, mask, cache)
        return self.ln_f(x), cache


class FlaxGPT2LMHeadModule(nn.Module):
    config: GPT2Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.transformer = FlaxGPT2Module(self.config, self.dtype)
        if not getattr(self.config, "tie_word_embeddings", True):
            self.lm_head = nn.Dense(self.config.vocab_size, use_bias=False, dtype=self.dtype,
                                    kernel_init=jax.nn.initializers.normal(self.config.initializer_range))  # fmt: skip

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                 last_only: bool = False, screen: Any = None, top_logits: Any = None) -> tuple[Any, Any]:  # fmt: skip
        """Logits `[B, S, V]`, or `[B, 1, V]` of the last position with `last_only` (generate's prefill: the
        head over every prompt position was 20 of its 63 GFLOP at batch 8 x 32 tokens)."""
        hidden, cache = self.transformer(input_ids, attention_mask, position_ids, cache)
        if last_only:
            hidden = hidden[:, -1:]
        if getattr(self.config, "tie_word_embeddings", True):
            embedding = self.transformer.wte.embedding.astype(self.dtype)
            flat = hidden.reshape(-1, hidden.shape[-1]).astype(self.dtype)
            # `screen` (generate's decode steps): only each row's `top_logits` largest logits, -inf elsewhere
            flat = kernels.linear(flat, embedding) if screen is None else kernels.top_logits(flat, screen, embedding, top_logits)
            logits = flat.reshape(*hidden.shape[:-1], -1)
        else:
            logits = self.lm_head(hidden)
        return logits, cache


# -- the user classes -----------------------------------------------------------------------------------------
class FlaxGPT2PreTrainedModel(FlaxPreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    convert = convert

    def __init__(self, config: GPT2Config, input_shape: tuple[int, ...] = (1, 1), seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(config, self.module_class(config=config, dtype=dtype, **kwargs), input_shape, seed, dtype, _do_init)

    def init_cache(self, batch_size: int, max_length: int) -> dict:
        """A KV cache for `max_length` positions (pass as `past_key_values`, with a `[B, max_length]` mask)."""
        c = self.config
        return F.new_cache(c.n_layer, batch_size, max_length, c.n_head, c.n_embd // c.n_head, self.dtype)

    def _embedding_path(self) -> tuple[str, ...]:
        base = ("transformer",) if self.base_model_prefix in self.params else ()
        return (*base, "wte", "embedding")

    def _lm_head_path(self) -> tuple[str, ...] | None:
        return ("lm_head", "kernel") if "lm_head" in self.params else None

    def _inputs(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> tuple[Any, Any, Any]:
        ids = jnp.asarray(input_ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"`input_ids` must be an integer array [batch, length], got shape {ids.shape} {ids.dtype}.")
        mask = None if attention_mask is None else jnp.asarray(attention_mask, dtype=jnp.int32)
        pos = None if position_ids is None else jnp.asarray(position_ids, dtype=jnp.int32)
        return ids.astype(jnp.int32), mask, pos


class FlaxGPT2Model(FlaxGPT2PreTrainedModel):
    module_class = FlaxGPT2Module

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, params: Any = None,
                 past_key_values: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        ids, mask, pos = self._inputs(input_ids, attention_mask, position_ids)
        hidden, cache = self.module.apply({"params": self.params if params is None else params}, ids, mask, pos, past_key_values)
        if return_dict is False:
            return (hidden, cache) if cache is not None else (hidden,)
        return FlaxBaseModelOutput(last_hidden_state=hidden, past_key_values=cache)


class FlaxGPT2LMHeadModel(FlaxGPT2PreTrainedModel):
    module_class = FlaxGPT2LMHeadModule

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, params: Any = None,
                 past_key_values: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        """Logits `[B, S, V]` for `input_ids` `[B, S]`; with `past_key_values` (from `init_cache`) the mask is
        `[B, max_length]` and the cache comes back advanced by S."""
        ids, mask, pos = self._inputs(input_ids, attention_mask, position_ids)
        logits, cache = self.module.apply({"params": self.params if params is None else params}, ids, mask, pos, past_key_values)
        if return_dict is False:
            return (logits, cache) if cache is not None else (logits,)
        return FlaxCausalLMOutput(logits=logits, past_key_values=cache)

    def _decode_step(self, params: Any, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any,
                     last_only: bool = False, screen: Any = None, top_logits: Any = None) -> tuple[Any, Any]:  # fmt: skip
        logits, cache = self.module.apply({"params": params}, input_ids, attention_mask, position_ids, cache, last_only,
                                          screen, top_logits)  # fmt: skip
        return logits.astype(jnp.float32), cache

    def _head_table(self, params: Any) -> Any:
        """The tied head `[V, E]` a screen can be built from (None when the head is untied)."""
        return params["transformer"]["wte"]["embedding"] if getattr(self.config, "tie_word_embeddings", True) else None
