"""T5 in Flax (flax.linen), parameter for parameter transformers 4.x's `FlaxT5Model` / `FlaxT5ForConditionalGeneration`.

Read top to bottom: layer norm → relative position buckets → feed-forward → attention → sublayers →
block → stack → encoder-decoder module → user classes. Parameter paths match transformers' Flax T5
(`encoder/block/0/layer/0/SelfAttention/q/kernel`, Dense kernels `[in, out]`, the relative position bias
only in block 0 of each stack), so `flax_model.msgpack` files load in either library.

Engine contract (`FlaxT5ForConditionalGeneration`): `init_cache(batch, max_length)` (decoder self-attention
only; cross-attention keys/values are recomputed from the encoder states each step),
`_encode(params, input_ids, attention_mask)` → encoder states, and
`_seq2seq_step(params, decoder_ids [B, S], encoder_states, encoder_mask, cache)` → (logits float32, cache).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pyengine.backends.jax import functional as F
from pyengine.modeling_flax_utils import FlaxBaseModelOutput, FlaxPreTrainedModel, FlaxSeq2SeqLMOutput
from pyengine.models.t5 import convert
from pyengine.models.t5.config import T5Config


class FlaxT5LayerNorm(nn.Module):
    """RMS norm without bias or mean subtraction, variance in float32."""

    eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> Any:
        weight = self.param("weight", jax.nn.initializers.ones, (x.shape[-1],))
        variance = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        return weight.astype(self.dtype) * (x * jax.lax.rsqrt(variance + self.eps)).astype(self.dtype)


def relative_position_bucket(relative: Any, bidirectional: bool, num_buckets: int, max_distance: int) -> Any:
    """Bucket of each `key - query` distance (Mesh TensorFlow's T5 scheme; same float ops as our PyTorch model)."""
    buckets = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).astype(relative.dtype) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = jnp.maximum(-relative, 0)
    max_exact = num_buckets // 2
    log_ratio = jnp.log(distance.astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = jnp.minimum(max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative.dtype), num_buckets - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


def _dense(features: int, std: float, dtype: Any) -> nn.Dense:
    return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=jax.nn.initializers.normal(std))


class FlaxT5DenseActDense(nn.Module):
    config: T5Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        f = c.initializer_factor
        if c.is_gated_act:
            self.wi_0 = _dense(c.d_ff, f * c.d_model**-0.5, self.dtype)
            self.wi_1 = _dense(c.d_ff, f * c.d_model**-0.5, self.dtype)
        else:
            self.wi = _dense(c.d_ff, f * c.d_model**-0.5, self.dtype)
        self.wo = _dense(c.d_model, f * c.d_ff**-0.5, self.dtype)
        self.act = F.get_activation(c.dense_act_fn)

    def __call__(self, x: Any) -> Any:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.config.is_gated_act else self.act(self.wi(x))
        return self.wo(h)


class FlaxT5Attention(nn.Module):
    """Unscaled multi-head attention; `has_relative_bias` adds the bucketed position-bias table."""

    config: T5Config
    has_relative_bias: bool = False
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        inner = c.num_heads * c.d_kv
        f = c.initializer_factor
        self.q = _dense(inner, f * (c.d_model * c.d_kv) ** -0.5, self.dtype)
        self.k = _dense(inner, f * c.d_model**-0.5, self.dtype)
        self.v = _dense(inner, f * c.d_model**-0.5, self.dtype)
        self.o = _dense(c.d_model, f * inner**-0.5, self.dtype)
        if self.has_relative_bias:
            self.relative_attention_bias = nn.Embed(c.relative_attention_num_buckets, c.num_heads, dtype=self.dtype,
                                                    embedding_init=jax.nn.initializers.normal(f * c.d_model**-0.5))  # fmt: skip

    def compute_bias(self, query_positions: Any, key_length: int) -> Any:
        """`[1, H, S, T]` bias of queries at `query_positions` `[S]` over keys `0 .. T-1`."""
        relative = jnp.arange(key_length)[None, :] - query_positions[:, None]
        c = self.config
        buckets = relative_position_bucket(relative, not self.is_decoder, c.relative_attention_num_buckets,
                                           c.relative_attention_max_distance)  # fmt: skip
        return jnp.transpose(self.relative_attention_bias(buckets), (2, 0, 1))[None]

    def __call__(self, x: Any, kv_source: Any, mask: Any, bias: Any, layer_cache: Any = None, index: Any = 0) -> tuple[Any, Any]:
        c = self.config
        batch, seq = x.shape[:2]
        q = self.q(x).reshape(batch, seq, c.num_heads, c.d_kv)
        k = self.k(kv_source).reshape(batch, kv_source.shape[1], c.num_heads, c.d_kv)
        v = self.v(kv_source).reshape(batch, kv_source.shape[1], c.num_heads, c.d_kv)
        if layer_cache is not None:
            layer_cache = F.write_cache(layer_cache, k, v, index)
            k, v = layer_cache
        out, _ = F.attend(q, k, v, mask, 1.0, bias, heads_first=layer_cache is not None)
        return self.o(out.reshape(batch, seq, -1)), layer_cache


class FlaxT5LayerSelfAttention(nn.Module):
    config: T5Config
    has_relative_bias: bool = False
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.SelfAttention = FlaxT5Attention(self.config, self.has_relative_bias, self.is_decoder, self.dtype)
        self.layer_norm = FlaxT5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x: Any, mask: Any, bias: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        h = self.layer_norm(x)
        out, layer_cache = self.SelfAttention(h, h, mask, bias, layer_cache, index)
        return x + out, layer_cache


class FlaxT5LayerCrossAttention(nn.Module):
    config: T5Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.EncDecAttention = FlaxT5Attention(self.config, False, True, self.dtype)
        self.layer_norm = FlaxT5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x: Any, encoder_states: Any, mask: Any) -> Any:
        out, _ = self.EncDecAttention(self.layer_norm(x), encoder_states, mask, None)
        return x + out


class FlaxT5LayerFF(nn.Module):
    config: T5Config
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.DenseReluDense = FlaxT5DenseActDense(self.config, self.dtype)
        self.layer_norm = FlaxT5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x: Any) -> Any:
        return x + self.DenseReluDense(self.layer_norm(x))


class FlaxT5SubLayers(nn.Module):
    """A block's `layer` list: "0" self-attention, ("1" cross-attention,) then feed-forward."""

    config: T5Config
    has_relative_bias: bool = False
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        layers = [FlaxT5LayerSelfAttention(self.config, self.has_relative_bias, self.is_decoder, self.dtype, name="0")]
        if self.is_decoder:
            layers.append(FlaxT5LayerCrossAttention(self.config, self.dtype, name="1"))
        layers.append(FlaxT5LayerFF(self.config, self.dtype, name=str(len(layers))))
        self.layers = layers

    def __call__(self, x: Any, mask: Any, bias: Any, enc: Any, enc_mask: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        x, layer_cache = self.layers[0](x, mask, bias, layer_cache, index)
        if self.is_decoder:
            x = self.layers[1](x, enc, enc_mask)
        return self.layers[-1](x), layer_cache


class FlaxT5Block(nn.Module):
    config: T5Config
    has_relative_bias: bool = False
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.layer = FlaxT5SubLayers(self.config, self.has_relative_bias, self.is_decoder, self.dtype)

    def __call__(self, *args: Any) -> tuple[Any, Any]:
        return self.layer(*args)


class FlaxT5BlockCollection(nn.Module):
    config: T5Config
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        n = self.config.num_decoder_layers if self.is_decoder else self.config.num_layers
        self.blocks = [FlaxT5Block(self.config, i == 0, self.is_decoder, self.dtype, name=str(i)) for i in range(n)]

    def __call__(self, x: Any, mask: Any, enc: Any, enc_mask: Any, cache: Any) -> tuple[Any, Any]:
        index = 0 if cache is None else cache["index"]
        keys = x.shape[1] if cache is None else F.cache_length(cache)
        positions = index + jnp.arange(x.shape[1])
        bias = self.blocks[0].layer.layers[0].SelfAttention.compute_bias(positions, keys)
        layers = []
        for i, block in enumerate(self.blocks):
            x, layer = block(x, mask, bias, enc, enc_mask, None if cache is None else cache["layers"][i], index)
            layers.append(layer)
        return x, None if cache is None else {"index": index + x.shape[1], "layers": tuple(layers)}


class FlaxT5Stack(nn.Module):
    config: T5Config
    is_decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.block = FlaxT5BlockCollection(self.config, self.is_decoder, self.dtype)
        self.final_layer_norm = FlaxT5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x: Any, attention_mask: Any, enc: Any = None, enc_mask: Any = None, cache: Any = None) -> tuple[Any, Any]:
        batch, seq = x.shape[:2]
        index = 0 if cache is None else cache["index"]
        keys = seq if cache is None else F.cache_length(cache)
        mask = F.attention_mask_4d(attention_mask, batch, seq, keys, index, causal=self.is_decoder)
        cross = None if enc is None else F.attention_mask_4d(enc_mask, batch, seq, enc.shape[1], 0, causal=False)
        x, cache = self.block(x, mask, enc, cross, cache)
        return self.final_layer_norm(x), cache


class FlaxT5Module(nn.Module):
    """shared embedding, encoder, decoder (+ LM head when `with_lm_head`); `encode` / `decode` as methods."""

    config: T5Config
    dtype: Any = jnp.float32
    with_lm_head: bool = True

    def setup(self) -> None:
        c = self.config
        self.shared = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype,
                               embedding_init=jax.nn.initializers.normal(c.initializer_factor * 1.0))  # fmt: skip
        self.encoder = FlaxT5Stack(c, False, self.dtype)
        self.decoder = FlaxT5Stack(c, True, self.dtype)
        if self.with_lm_head and not c.tie_word_embeddings:
            self.lm_head = _dense(c.vocab_size, c.initializer_factor, self.dtype)

    def encode(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.encoder(self.shared(input_ids), attention_mask)[0]

    def decode(self, decoder_input_ids: Any, enc: Any, enc_mask: Any, cache: Any = None, decoder_attention_mask: Any = None) -> tuple[Any, Any]:
        hidden, cache = self.decoder(self.shared(decoder_input_ids), decoder_attention_mask, enc, enc_mask, cache)
        if not self.with_lm_head:
            return hidden, cache
        if self.config.tie_word_embeddings:
            return self.shared.attend(hidden * self.config.d_model**-0.5), cache
        return self.lm_head(hidden), cache

    def __call__(self, input_ids: Any, attention_mask: Any = None, decoder_input_ids: Any = None,
                 decoder_attention_mask: Any = None) -> tuple[Any, Any]:  # fmt: skip
        enc = self.encode(input_ids, attention_mask)
        out, _ = self.decode(decoder_input_ids, enc, attention_mask, None, decoder_attention_mask)
        return out, enc


# -- the user classes -----------------------------------------------------------------------------------------
class FlaxT5PreTrainedModel(FlaxPreTrainedModel):
    config_class = T5Config
    base_model_prefix = "transformer"
    convert = convert
    _lm_head = True

    def __init__(self, config: T5Config, input_shape: tuple[int, ...] = (1, 1), seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True, **kwargs: Any) -> None:  # fmt: skip
        module = FlaxT5Module(config=config, dtype=dtype, with_lm_head=self._lm_head, **kwargs)
        super().__init__(config, module, input_shape, seed, dtype, _do_init)

    def _init_inputs(self, input_ids: Any) -> dict[str, Any]:
        return {"input_ids": input_ids, "decoder_input_ids": jnp.zeros_like(input_ids)}

    def init_cache(self, batch_size: int, max_length: int) -> dict:
        c = self.config
        return F.new_cache(c.num_decoder_layers, batch_size, max_length, c.num_heads, c.d_kv, self.dtype)

    def _embedding_path(self) -> tuple[str, ...]:
        return ("shared", "embedding")

    def _lm_head_path(self) -> tuple[str, ...] | None:
        return ("lm_head", "kernel") if "lm_head" in self.params else None

    def _apply(self, params: Any, *args: Any, method: str) -> Any:
        return self.module.apply({"params": self.params if params is None else params}, *args,
                                 method=getattr(FlaxT5Module, method))  # fmt: skip

    def _encode(self, params: Any, input_ids: Any, attention_mask: Any) -> Any:
        return self._apply(params, input_ids, attention_mask, method="encode")

    def _ids(self, x: Any, name: str) -> Any:
        if x is None:
            return None
        x = jnp.asarray(x)
        if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"`{name}` must be an integer array [batch, length], got shape {x.shape} {x.dtype}.")
        return x.astype(jnp.int32)

    def encode(self, input_ids: Any, attention_mask: Any = None, params: Any = None, **kwargs: Any) -> FlaxBaseModelOutput:
        """The encoder's last hidden states `[B, S, E]` (transformers' `model.encode`)."""
        ids = self._ids(input_ids, "input_ids")
        mask = jnp.ones_like(ids) if attention_mask is None else self._ids(attention_mask, "attention_mask")
        return FlaxBaseModelOutput(last_hidden_state=self._encode(params, ids, mask))

    def __call__(self, input_ids: Any, attention_mask: Any = None, decoder_input_ids: Any = None,
                 decoder_attention_mask: Any = None, params: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        if decoder_input_ids is None:
            raise ValueError("Make sure to provide `decoder_input_ids` (the shifted labels, starting with "
                             "`decoder_start_token_id`).")  # fmt: skip
        ids = self._ids(input_ids, "input_ids")
        mask = jnp.ones_like(ids) if attention_mask is None else self._ids(attention_mask, "attention_mask")
        out, enc = self._apply(params, ids, mask, self._ids(decoder_input_ids, "decoder_input_ids"),
                               self._ids(decoder_attention_mask, "decoder_attention_mask"), method="__call__")  # fmt: skip
        if return_dict is False:
            return (out, enc)
        if self._lm_head:
            return FlaxSeq2SeqLMOutput(logits=out, encoder_last_hidden_state=enc)
        return FlaxBaseModelOutput(last_hidden_state=out)


class FlaxT5Model(FlaxT5PreTrainedModel):
    """Encoder-decoder without the LM head: decoder hidden states."""

    _lm_head = False


class FlaxT5ForConditionalGeneration(FlaxT5PreTrainedModel):
    def _seq2seq_step(self, params: Any, decoder_ids: Any, enc: Any, enc_mask: Any, cache: Any) -> tuple[Any, Any]:
        logits, cache = self._apply(params, decoder_ids, enc, enc_mask, cache, method="decode")
        return logits.astype(jnp.float32), cache
