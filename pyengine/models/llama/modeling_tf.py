"""LLaMA in TensorFlow (Keras): `TFLlamaModel` / `TFLlamaForCausalLM`, weight for weight our PyTorch LLaMA.

transformers never had a TF LLaMA; this one follows its TF naming conventions
(`model/layers_._0/self_attn/q_proj/kernel:0`, Dense kernels `[in, out]`), reads PyTorch checkpoints with
`from_pt` through `convert.pt_to_tf`, and writes / reads `tf_model.h5` in transformers' layout.

Read top to bottom: rotary tables → attention (GQA) → MLP → decoder layer → main layer → models.
Engine contract as TFGPT2LMHeadModel: `tf_prefill`, `tf_decode`, `tf_reorder`.

Shapes: `B` batch, `S` new tokens, `T` cache length, `H` query heads, `H_kv` key/value heads, `D` head dim.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tf_keras

from pyengine.backends.tf import kernels, tf
from pyengine.backends.tf.layers import (
    TFDense,
    TFEmbedding,
    TFRMSNorm,
    attention_bias,
    flat_linear,
    get_activation,
    left_pad_positions,
    update_cache,
)
from pyengine.modeling_tf_utils import TFBaseModelOutputWithPast, TFCausalLMOutputWithPast, TFPreTrainedModel
from pyengine.models.llama import convert
from pyengine.models.llama.config import LlamaConfig


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
    """Inverse RoPE frequencies `[D/2]` float32 ("default", "linear", "llama3"), the PyTorch model's formula."""
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    dim = int(config.head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(config.rope_theta), exponent)).astype(np.float32)
    if rope_type == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if rope_type == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > context / low, inv_freq / factor, inv_freq)
        smooth = (context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < context / high) & ~(wavelen > context / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    if rope_type != "default":
        raise NotImplementedError(f"rope_scaling type {rope_type!r} is not supported by the TF LLaMA.")
    return inv_freq


def _rotate_half(x: tf.Tensor) -> tf.Tensor:
    half = x.shape[-1] // 2
    return tf.concat([-x[..., half:], x[..., :half]], axis=-1)


def _side_by_side(dense: tuple) -> tuple[tf.Tensor, tf.Tensor]:
    """Dense layers' kernels as one `[sum(out), in]` weight, and their biases `[sum(out)]` (zeros if none)."""
    weight = tf.concat([tf.transpose(d.kernel) for d in dense], 0)
    bias = tf.concat([d.bias if d.bias is not None else tf.zeros([d.kernel.shape[1]]) for d in dense], 0)
    return weight, bias


class TFLlamaAttention(tf_keras.layers.Layer):
    def __init__(self, config: LlamaConfig, scope: str) -> None:
        super().__init__(name="self_attn")
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        e, std, bias = config.hidden_size, config.initializer_range, config.attention_bias
        self.q_proj = TFDense(self.heads * self.head_dim, e, f"{scope}/q_proj", std, bias)
        self.k_proj = TFDense(self.kv_heads * self.head_dim, e, f"{scope}/k_proj", std, bias)
        self.v_proj = TFDense(self.kv_heads * self.head_dim, e, f"{scope}/v_proj", std, bias)
        self.o_proj = TFDense(e, self.heads * self.head_dim, f"{scope}/o_proj", std, bias)

    def _split(self, x: tf.Tensor, heads: int) -> tf.Tensor:
        b, s = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [b, s, heads, self.head_dim]), [0, 2, 1, 3])  # [B, heads, S, D]

    def call(self, x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor, bias: tf.Tensor, cache: tuple | None,
             start: Any, nk: tuple | None = None) -> tuple[tf.Tensor, tuple]:  # fmt: skip
        if nk is not None:  # a decode step: q, k, v in one C++ product (see nk_weights)
            qkv = flat_linear(x, nk[0], nk[1])
            q, k, v = tf.split(qkv, [self.heads * self.head_dim] + [self.kv_heads * self.head_dim] * 2, axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = self._split(q, self.heads), self._split(k, self.kv_heads), self._split(v, self.kv_heads)
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, S, D]
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = update_cache(cache[0], k, start), update_cache(cache[1], v, start)  # [B, H_kv, T, D]
        if cache is not None and x.shape[1] == 1:  # a decode step under XLA: the C++ kernel over the cache
            out = kernels.attend_cached(q[:, :, 0], k, v, bias[:, 0, 0] == 0, self.head_dim**-0.5)  # [B, H, D]
            if out is not None:
                out = tf.reshape(out, [-1, 1, self.heads * self.head_dim])
                return (self.o_proj(out) if nk is None else flat_linear(out, nk[2], self.o_proj.bias)), (k, v)
        groups = self.heads // self.kv_heads
        keys, values = tf.repeat(k, groups, axis=1), tf.repeat(v, groups, axis=1)  # GQA: [B, H, T, D]
        scores = tf.matmul(q, keys, transpose_b=True) * (self.head_dim**-0.5) + bias
        out = tf.transpose(tf.matmul(tf.nn.softmax(scores, axis=-1), values), [0, 2, 1, 3])  # [B, S, H, D]
        out = tf.reshape(out, [tf.shape(x)[0], tf.shape(x)[1], self.heads * self.head_dim])
        return (self.o_proj(out) if nk is None else flat_linear(out, nk[2], self.o_proj.bias)), (k, v)

    def nk_weights(self) -> tuple:
        """(q|k|v weights `[out, in]` side by side, their biases (zeros without: loop state holds no None),
        o_proj's `[out, in]`)."""
        return _side_by_side((self.q_proj, self.k_proj, self.v_proj)) + (tf.transpose(self.o_proj.kernel),)


class TFLlamaMLP(tf_keras.layers.Layer):
    def __init__(self, config: LlamaConfig, scope: str) -> None:
        super().__init__(name="mlp")
        e, i, std, bias = config.hidden_size, config.intermediate_size, config.initializer_range, config.mlp_bias
        self.gate_proj = TFDense(i, e, f"{scope}/gate_proj", std, bias)
        self.up_proj = TFDense(i, e, f"{scope}/up_proj", std, bias)
        self.down_proj = TFDense(e, i, f"{scope}/down_proj", std, bias)
        self.act = get_activation(config.hidden_act)

    def call(self, x: tf.Tensor, nk: tuple | None = None) -> tf.Tensor:
        if nk is None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        gate, up = tf.split(flat_linear(x, nk[0], nk[1]), 2, axis=-1)  # a decode step: one C++ product
        return flat_linear(self.act(gate) * up, nk[2], self.down_proj.bias)

    def nk_weights(self) -> tuple:
        """(gate|up weights `[out, in]` side by side, their biases (or zeros), down_proj's `[out, in]`)."""
        return _side_by_side((self.gate_proj, self.up_proj)) + (tf.transpose(self.down_proj.kernel),)


class TFLlamaDecoderLayer(tf_keras.layers.Layer):
    def __init__(self, config: LlamaConfig, scope: str) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.input_layernorm = TFRMSNorm(config.hidden_size, config.rms_norm_eps, f"{scope}/input_layernorm")
        self.self_attn = TFLlamaAttention(config, f"{scope}/self_attn")
        self.post_attention_layernorm = TFRMSNorm(config.hidden_size, config.rms_norm_eps,
                                                  f"{scope}/post_attention_layernorm")  # fmt: skip
        self.mlp = TFLlamaMLP(config, f"{scope}/mlp")

    def call(self, x, cos, sin, bias, cache, start, nk=None):  # noqa: ANN001, ANN201
        """`nk`: `nk_weights()` for a decode step's C++ products, or None."""
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, bias, cache, start, None if nk is None else nk[0])
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x), None if nk is None else nk[1]), kv

    def nk_weights(self) -> tuple:
        return self.self_attn.nk_weights(), self.mlp.nk_weights()


class TFLlamaMainLayer(tf_keras.layers.Layer):
    """Embeddings, decoder layers, final RMSNorm (scope `model`)."""

    def __init__(self, config: LlamaConfig, name: str = "model") -> None:
        super().__init__(name=name)
        self.config = config
        self.embed_tokens = TFEmbedding(config.vocab_size, config.hidden_size, f"{name}/embed_tokens",
                                        config.initializer_range)  # fmt: skip
        self.layers_ = [TFLlamaDecoderLayer(config, f"{name}/layers_._{i}") for i in range(config.num_hidden_layers)]
        self.norm = TFRMSNorm(config.hidden_size, config.rms_norm_eps, f"{name}/norm")
        self.inv_freq = tf.constant(rope_inv_freq(config))  # [D/2]

    def get_input_embeddings(self) -> TFEmbedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: TFEmbedding) -> None:
        self.embed_tokens = value

    def _prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        raise NotImplementedError("LLaMA head pruning is not implemented (no transformers model prunes LLaMA).")

    def run(self, input_ids, mask, positions, caches, start, inputs_embeds=None, nk=None):  # noqa: ANN001, ANN201
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        freqs = tf.cast(positions, tf.float32)[..., None] * self.inv_freq  # [B, S, D/2]
        emb = tf.concat([freqs, freqs], axis=-1)
        cos, sin = tf.cos(emb), tf.sin(emb)
        bias = attention_bias(mask, start, tf.shape(x)[1])
        new_caches = []
        for i, layer in enumerate(self.layers_):
            x, kv = layer(x, cos, sin, bias, None if caches is None else caches[i], start, *([nk[i]] if nk else []))
            new_caches.append(kv)
        return self.norm(x), new_caches

    def call(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, training=False,
             **unused: Any) -> TFBaseModelOutputWithPast:  # noqa: ANN001  # fmt: skip
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        shape = tf.shape(input_ids if input_ids is not None else inputs_embeds)[:2]
        mask = tf.ones(shape, tf.int32) if attention_mask is None else tf.cast(attention_mask, tf.int32)
        if position_ids is None:
            position_ids = left_pad_positions(mask)
        x, _ = self.run(input_ids, mask, position_ids, None, 0, inputs_embeds)
        return TFBaseModelOutputWithPast(last_hidden_state=x)


class TFLlamaPreTrainedModel(TFPreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _tf_convert = convert


class TFLlamaModel(TFLlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.model = TFLlamaMainLayer(config, name="model")

    def call(self, input_ids=None, **kwargs: Any) -> TFBaseModelOutputWithPast:  # noqa: ANN001
        kwargs.pop("return_dict", None)
        return self.model(input_ids, **kwargs)

    @classmethod
    def can_generate(cls) -> bool:
        return False


class TFLlamaForCausalLM(TFLlamaPreTrainedModel):
    """LLaMA with its LM head (tied to the embeddings when `tie_word_embeddings`); `generate()` on the engine."""

    def __init__(self, config: LlamaConfig, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.model = TFLlamaMainLayer(config, name="model")
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = TFDense(config.vocab_size, config.hidden_size, "lm_head", config.initializer_range, False)

    def get_output_embeddings(self) -> Any:
        return self.get_input_embeddings() if self.lm_head is None else self.lm_head

    def set_output_embeddings(self, value: Any) -> None:
        if self.lm_head is None:
            self.set_input_embeddings(value)
        else:
            self.lm_head = value

    def _resize_extra(self, new_num_tokens: int) -> None:
        if self.lm_head is not None:
            old = self.lm_head.kernel
            rows = min(old.shape[1], new_num_tokens)
            head = TFDense(new_num_tokens, old.shape[0], "lm_head", self.config.initializer_range, False)
            head.kernel.assign(tf.concat([old[:, :rows], head.kernel[:, rows:]], axis=1))
            self.lm_head = head

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return self.model.embed_tokens.attend(x) if self.lm_head is None else self.lm_head(x)

    def call(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
             return_dict=None, training=False, **kwargs: Any) -> TFCausalLMOutputWithPast:  # noqa: ANN001  # fmt: skip
        out = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds)
        logits = self._logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 1:], logits[:, :-1]))
        return TFCausalLMOutputWithPast(loss=loss, logits=logits)

    # -- engine-facing ---------------------------------------------------------------------------------
    def tf_prefill(self, input_ids: tf.Tensor, mask: tf.Tensor, max_length: int) -> tuple[tf.Tensor, dict]:
        cfg = self.config
        shape = [tf.shape(input_ids)[0], cfg.num_key_value_heads, max_length, cfg.head_dim]
        caches = [(tf.zeros(shape), tf.zeros(shape)) for _ in range(cfg.num_hidden_layers)]
        positions = left_pad_positions(mask)[:, : input_ids.shape[1]]
        x, caches = self.model.run(input_ids, mask, positions, caches, 0)
        state = {"caches": caches, "mask": mask}
        if input_ids.shape[0] != 1 and kernels.decode_on_cpp():
            # Decode steps multiply B rows by every weight: the C++ product reads weights `[out, in]`, so the
            # Dense kernels are transposed once per call (q|k|v and gate|up side by side: one product each).
            # One row: the layers give the C++ product their `[in, out]` kernels as they are (one_row_on_cpp).
            state["nk"] = [layer.nk_weights() for layer in self.model.layers_]
            if self.lm_head is not None:
                state["head_nk"] = tf.transpose(self.lm_head.kernel)
        return self._decode_logits(x[:, -1], state), state

    def tf_decode(self, state: dict, tokens: tf.Tensor, cur: Any) -> tuple[tf.Tensor, dict]:
        mask, start = state["mask"], tf.cast(cur, tf.int32) - 1
        positions = tf.gather(left_pad_positions(mask), [start], axis=1)  # [B, 1]
        x, caches = self.model.run(tf.cast(tokens, tf.int32)[:, None], mask, positions, state["caches"], start,
                                   nk=state.get("nk"))  # fmt: skip
        return self._decode_logits(x[:, -1], state), {**state, "caches": caches}

    def tf_screen_head(self, state: dict, top_logits: Any) -> dict:
        """The state for decode steps that need only each row's `top_logits` largest logits: the int8 screen of
        the head `[V, E]` (the tied table, or the untied head's `[out, in]` copy a batch keeps), built now
        (kernels.top_logits_screen); `state` unchanged where it cannot run (an untied head at batch 1)."""
        head = self._head_nk(state)
        screen = None if head is None else kernels.top_logits_screen(head)
        return state if screen is None else {**state, "screen": screen, "top_logits": top_logits}

    def _head_nk(self, state: dict) -> tf.Tensor | None:
        return self.model.embed_tokens.embeddings if self.lm_head is None else state.get("head_nk")

    def _decode_logits(self, x: tf.Tensor, state: dict) -> tf.Tensor:
        """Logits `[B, V]` of the last hidden states `[B, E]`; on the C++ product when `state` holds `nk`, only
        the top ones when it holds a screen."""
        if "screen" in state:
            return kernels.top_logits(x, state["screen"], self._head_nk(state), state["top_logits"])
        if "nk" not in state:
            return self._logits(x)
        return kernels.linear(x, self._head_nk(state))  # [V, E]

    def tf_reorder(self, state: dict, index: tf.Tensor) -> dict:
        caches = [(tf.gather(k, index), tf.gather(v, index)) for k, v in state["caches"]]
        return {**state, "caches": caches, "mask": tf.gather(state["mask"], index)}
