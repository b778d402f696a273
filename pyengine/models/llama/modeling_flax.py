"""LLaMA in Flax (flax.linen), parameter for parameter transformers 4.x's `FlaxLlamaModel` / `FlaxLlamaForCausalLM`.

Read top to bottom: RMSNorm → RoPE → attention → MLP → layer → layers → model → LM head → user classes.
Parameter paths match transformers' Flax LLaMA (`model/layers/0/self_attn/q_proj/kernel`, Dense kernels
`[in, out]`), so `flax_model.msgpack` files load in either library; `convert.py` maps them to PyTorch.
Grouped key/value heads and the "linear" / "llama3" RoPE scalings follow our PyTorch model.

Engine contract (`FlaxLlamaForCausalLM`): `init_cache(batch, max_length)` and
`_decode_step(params, input_ids [B, S], attention_mask [B, T], position_ids [B, S], cache, last_only)`
→ (logits `[B, S, V]` float32, or `[B, 1, V]` with last_only, cache).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pyengine.backends.jax import functional as F
from pyengine.backends.jax import kernels
from pyengine.modeling_flax_utils import FlaxBaseModelOutput, FlaxCausalLMOutput, FlaxPreTrainedModel
from pyengine.models.llama import convert
from pyengine.models.llama.config import LlamaConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class FlaxLlamaRMSNorm(nn.Module):
    eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> Any:
        weight = self.param("weight", jax.nn.initializers.ones, (x.shape[-1],))
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return weight.astype(self.dtype) * h.astype(self.dtype)


class FlaxDense(nn.Module):
    """`nn.Dense`'s parameters (`kernel` `[in, out]`, `bias` `[out]`: transformers' Flax names and layout). When
    the parameters also hold `kernel_t` (`[out, in]`, added once per generate call by
    `FlaxLlamaForCausalLM._decode_params`), a decode step's few rows go through `kernels.linear` (the C++
    kernel's fastest layout for several rows); one row goes through it over the stored kernel (`weight_kn`,
    as fast at one row); otherwise, and for prefill's many rows, XLA's dot on the stored kernel.
    (Transposing in here would run every step: XLA does not hoist it out of the decode loop.)"""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = jax.nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Any) -> Any:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", jax.nn.initializers.zeros, (self.features,)) if self.use_bias else None
        flat = x.reshape(-1, x.shape[-1]).astype(self.dtype)  # [M, in]
        kernel = kernel.astype(self.dtype)
        bias = None if bias is None else bias.astype(self.dtype)
        if flat.shape[0] <= kernels.MAX_ROWS and self.has_variable("params", "kernel_t"):
            y = kernels.linear(flat, self.get_variable("params", "kernel_t").astype(self.dtype), bias)
        elif flat.shape[0] == 1:  # a batch-1 decode step: the C++ kernel reads the stored [in, out] kernel
            y = kernels.linear(flat, kernel, bias, weight_kn=True)
        else:
            y = flat @ kernel if bias is None else flat @ kernel + bias
        return y.reshape(*x.shape[:-1], self.features)


def decode_product(module: nn.Module, group: str, x: Any) -> Any:
    """x `[B, S, in]` times the `<group>_t` weights `[out, in]` (+ `<group>_b`) that `_decode_params` placed in
    `module`'s parameters (several Dense kernels side by side), through `kernels.linear`; None when they are
    not there or there are too many rows (then the caller runs its Dense layers one by one)."""
    rows = x.shape[0] * x.shape[1]
    if rows > kernels.MAX_ROWS or not module.has_variable("params", f"{group}_t"):
        return None
    weight = module.get_variable("params", f"{group}_t").astype(module.dtype)
    bias = module.get_variable("params", f"{group}_b") if module.has_variable("params", f"{group}_b") else None
    out = kernels.linear(x.reshape(rows, -1).astype(module.dtype), weight, None if bias is None else bias.astype(module.dtype))
    return out.reshape(*x.shape[:-1], -1)


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
    """Inverse RoPE frequencies `[D/2]` float32, scaled as our PyTorch model scales them."""
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise NotImplementedError(f"rope_scaling type {rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}.")
    dim = int(config.head_dim * getattr(config, "partial_rotary_factor", 1.0))
    inv = (1.0 / (np.float32(config.rope_theta) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)))).astype(np.float32)
    if rope_type == "linear":
        return (inv / np.float32(scaling["factor"])).astype(np.float32)
    if rope_type == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > context / low, inv / factor, inv)
        smooth = (context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < context / high) & ~(wavelen > context / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def apply_rope(x: Any, cos: Any, sin: Any) -> Any:
    """x `[B, S, H, D]`, cos/sin `[B, S, D]`: x*cos + rotate_half(x)*sin."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


class FlaxLlamaAttention(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        if c.num_attention_heads % c.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads.")
        init = jax.nn.initializers.normal(c.initializer_range)
        dense = lambda n: FlaxDense(n, use_bias=c.attention_bias, dtype=self.dtype, kernel_init=init)  # noqa: E731
        self.q_proj = dense(c.num_attention_heads * c.head_dim)
        self.k_proj = dense(c.num_key_value_heads * c.head_dim)
        self.v_proj = dense(c.num_key_value_heads * c.head_dim)
        self.o_proj = dense(c.hidden_size)

    def __call__(self, x: Any, cos_sin: tuple[Any, Any], mask: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        batch, seq = x.shape[:2]
        c, d = self.config, self.config.head_dim
        fused = decode_product(self, "qkv", x)  # a decode step: q, k, v in one C++ product
        if fused is not None:
            q, k, v = jnp.split(fused, [c.num_attention_heads * d, (c.num_attention_heads + c.num_key_value_heads) * d], -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = apply_rope(q.reshape(batch, seq, -1, d), *cos_sin)
        k = apply_rope(k.reshape(batch, seq, -1, d), *cos_sin)
        v = v.reshape(batch, seq, -1, d)
        if layer_cache is not None:
            layer_cache = F.write_cache(layer_cache, k, v, index)
            k, v = layer_cache
        if layer_cache is not None and seq == 1:  # a decode step: only the visible slots (C++ kernel)
            out = kernels.attend_cached(q[:, 0], k, v, mask[:, 0, 0], d**-0.5)[:, None]  # [B, 1, H, D]
        else:
            out, _ = F.attend(q, k, v, mask, d**-0.5, heads_first=layer_cache is not None)
        return self.o_proj(out.reshape(batch, seq, -1)), layer_cache


class FlaxLlamaMLP(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        init = jax.nn.initializers.normal(c.initializer_range)
        self.gate_proj = FlaxDense(c.intermediate_size, use_bias=c.mlp_bias, dtype=self.dtype, kernel_init=init)
        self.up_proj = FlaxDense(c.intermediate_size, use_bias=c.mlp_bias, dtype=self.dtype, kernel_init=init)
        self.down_proj = FlaxDense(c.hidden_size, use_bias=c.mlp_bias, dtype=self.dtype, kernel_init=init)
        self.act = F.get_activation(c.hidden_act)

    def __call__(self, x: Any) -> Any:
        fused = decode_product(self, "gate_up", x)  # a decode step: gate and up in one C++ product
        gate, up = jnp.split(fused, 2, -1) if fused is not None else (self.gate_proj(x), self.up_proj(x))
        return self.down_proj(self.act(gate) * up)


class FlaxLlamaDecoderLayer(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.input_layernorm = FlaxLlamaRMSNorm(c.rms_norm_eps, self.dtype)
        self.self_attn = FlaxLlamaAttention(c, self.dtype)
        self.post_attention_layernorm = FlaxLlamaRMSNorm(c.rms_norm_eps, self.dtype)
        self.mlp = FlaxLlamaMLP(c, self.dtype)

    def __call__(self, x: Any, cos_sin: Any, mask: Any, layer_cache: Any, index: Any) -> tuple[Any, Any]:
        attn, layer_cache = self.self_attn(self.input_layernorm(x), cos_sin, mask, layer_cache, index)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), layer_cache


class FlaxLlamaLayerCollection(nn.Module):
    """The `layers` list: layers named "0", "1", ... (transformers' parameter paths)."""

    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.blocks = [FlaxLlamaDecoderLayer(self.config, self.dtype, name=str(i))
                       for i in range(self.config.num_hidden_layers)]  # fmt: skip

    def __call__(self, x: Any, cos_sin: Any, mask: Any, cache: Any) -> tuple[Any, Any]:
        index = 0 if cache is None else cache["index"]
        layers = []
        for i, block in enumerate(self.blocks):
            x, layer = block(x, cos_sin, mask, None if cache is None else cache["layers"][i], index)
            layers.append(layer)
        return x, None if cache is None else {"index": index + x.shape[1], "layers": tuple(layers)}


class FlaxLlamaModule(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype,
                                     embedding_init=jax.nn.initializers.normal(c.initializer_range))  # fmt: skip
        self.layers = FlaxLlamaLayerCollection(c, self.dtype)
        self.norm = FlaxLlamaRMSNorm(c.rms_norm_eps, self.dtype)
        self.inv_freq = rope_inv_freq(c)

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None) -> tuple[Any, Any]:
        batch, seq = input_ids.shape
        index = 0 if cache is None else cache["index"]
        keys = seq if cache is None else F.cache_length(cache)
        if position_ids is None:
            position_ids = jnp.broadcast_to(index + jnp.arange(seq), (batch, seq))
        freqs = position_ids.astype(jnp.float32)[..., None] * jnp.asarray(self.inv_freq)[None, None, :]
        emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, S, D]
        cos_sin = (jnp.cos(emb).astype(self.dtype), jnp.sin(emb).astype(self.dtype))
        mask = F.attention_mask_4d(attention_mask, batch, seq, keys, index, causal=True)
        x, cache = self.layers(self.embed_tokens(input_ids), cos_sin, mask, cache)
        return self.norm(x), cache


class FlaxLlamaForCausalLMModule(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.model = FlaxLlamaModule(self.config, self.dtype)
        if not self.config.tie_word_embeddings:
            self.lm_head = FlaxDense(self.config.vocab_size, use_bias=False, dtype=self.dtype,
                                    kernel_init=jax.nn.initializers.normal(self.config.initializer_range))  # fmt: skip

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                 last_only: bool = False, screen: Any = None, top_logits: Any = None) -> tuple[Any, Any]:  # fmt: skip
        """Logits `[B, S, V]`, or `[B, 1, V]` of the last position with `last_only` (generate's prefill)."""
        hidden, cache = self.model(input_ids, attention_mask, position_ids, cache)
        if last_only:
            hidden = hidden[:, -1:]
        if self.config.tie_word_embeddings:  # hidden @ table.T: the table is already [out, in]
            table = self.model.embed_tokens.embedding.astype(self.dtype)
            flat = hidden.reshape(-1, hidden.shape[-1]).astype(self.dtype)
            # `screen` (generate's decode steps): only each row's `top_logits` largest logits, -inf elsewhere
            flat = kernels.linear(flat, table) if screen is None else kernels.top_logits(flat, screen, table, top_logits)
            logits = flat.reshape(*hidden.shape[:-1], -1)
        else:
            logits = self.lm_head(hidden)
        return logits, cache


# -- the user classes -----------------------------------------------------------------------------------------
class FlaxLlamaPreTrainedModel(FlaxPreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    convert = convert

    def __init__(self, config: LlamaConfig, input_shape: tuple[int, ...] = (1, 1), seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(config, self.module_class(config=config, dtype=dtype, **kwargs), input_shape, seed, dtype, _do_init)

    def init_cache(self, batch_size: int, max_length: int) -> dict:
        c = self.config
        return F.new_cache(c.num_hidden_layers, batch_size, max_length, c.num_key_value_heads, c.head_dim, self.dtype)

    def _embedding_path(self) -> tuple[str, ...]:
        base = ("model",) if "model" in self.params else ()
        return (*base, "embed_tokens", "embedding")

    def _lm_head_path(self) -> tuple[str, ...] | None:
        return ("lm_head", "kernel") if "lm_head" in self.params else None

    def _run(self, params: Any, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> tuple[Any, Any]:
        ids = jnp.asarray(input_ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"`input_ids` must be an integer array [batch, length], got shape {ids.shape} {ids.dtype}.")
        mask = None if attention_mask is None else jnp.asarray(attention_mask, dtype=jnp.int32)
        pos = None if position_ids is None else jnp.asarray(position_ids, dtype=jnp.int32)
        return self.module.apply({"params": self.params if params is None else params}, ids.astype(jnp.int32), mask, pos, cache)


class FlaxLlamaModel(FlaxLlamaPreTrainedModel):
    module_class = FlaxLlamaModule

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, params: Any = None,
                 past_key_values: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        hidden, cache = self._run(params, input_ids, attention_mask, position_ids, past_key_values)
        if return_dict is False:
            return (hidden, cache) if cache is not None else (hidden,)
        return FlaxBaseModelOutput(last_hidden_state=hidden, past_key_values=cache)


class FlaxLlamaForCausalLM(FlaxLlamaPreTrainedModel):
    module_class = FlaxLlamaForCausalLMModule

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, params: Any = None,
                 past_key_values: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        """Logits `[B, S, V]`; with `past_key_values` (from `init_cache`) the mask is `[B, max_length]`."""
        logits, cache = self._run(params, input_ids, attention_mask, position_ids, past_key_values)
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
        return params["model"]["embed_tokens"]["embedding"] if self.config.tie_word_embeddings else None

    def _decode_params(self, params: Any, batch: int) -> Any:
        """Adds `kernel_t` (`[out, in]`) next to every Dense kernel for the decode steps' C++ products (see
        FlaxDense). Not at batch 1: there the C++ kernel reads the stored `[in, out]` kernels as fast, and the
        copies (~0.5 GB for SmolLM2-135M) would cost about two steps."""
        if batch == 1 or kernels.linear_impl().label != "cpp":
            return params

        groups = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}
        grouped = {name for names in groups.values() for name in names}

        def add(tree: Any) -> Any:
            if not isinstance(tree, Mapping):
                return tree
            out = {k: add(v) if k not in grouped else v for k, v in tree.items()}
            for group, names in groups.items():  # decode_product: the group's kernels side by side
                if all(n in tree for n in names):
                    out[f"{group}_t"] = jnp.concatenate([tree[n]["kernel"].T for n in names], axis=0)
                    if all("bias" in tree[n] for n in names):
                        out[f"{group}_b"] = jnp.concatenate([tree[n]["bias"] for n in names])
            kernel = tree.get("kernel")
            if kernel is not None and getattr(kernel, "ndim", 0) == 2:  # FlaxDense
                out["kernel_t"] = kernel.T
            return out

        return add(params)
