"""T5 in TensorFlow (Keras), weight for weight transformers' `TFT5ForConditionalGeneration`.

Read top to bottom: relative position buckets → attention → feed-forward → block → stack → model.
Variables carry transformers' TF names (`encoder/block_._0/layer_._0/SelfAttention/q/kernel:0`, the shared
embedding `shared/embeddings:0`), so `tf_model.h5` files load in either library; `from_pt` goes through
`convert.pt_to_tf`. T5 specifics: no attention scaling, RMS layer norms, one relative position bias per
stack (computed by block 0, reused by the others), the tied head rescales by `d_model ** -0.5`.

Engine contract: `tf_prefill(encoder_ids, encoder_mask, decoder_ids, max_length)` runs the encoder once,
the cross-attention keys/values once, and the decoder prompt into a self-attention cache; `tf_decode`
steps one decoder token; `tf_reorder` follows beams.

Shapes: `B` batch, `S` new decoder tokens, `T` decoder cache length, `L` encoder length, `H` heads, `D` d_kv.
"""

from __future__ import annotations

import math
from typing import Any

import tf_keras

from pyengine.backends.tf import tf
from pyengine.backends.tf.layers import (
    TFDense,
    TFEmbedding,
    TFRMSNorm,
    attention_bias,
    get_activation,
    update_cache,
)
from pyengine.modeling_tf_utils import TFPreTrainedModel, TFSeq2SeqLMOutput
from pyengine.models.t5 import convert
from pyengine.models.t5.config import T5Config


def relative_position_bucket(relative: tf.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> tf.Tensor:
    """transformers' T5 bucketing of `key - query` offsets (exact below num_buckets/2, log-spaced above)."""
    buckets = tf.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += tf.cast(relative > 0, relative.dtype) * num_buckets
        relative = tf.abs(relative)
    else:
        relative = -tf.minimum(relative, 0)
    max_exact = num_buckets // 2
    large = max_exact + tf.cast(
        tf.math.log(tf.cast(relative, tf.float32) / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact), relative.dtype)  # fmt: skip
    large = tf.minimum(large, num_buckets - 1)
    return buckets + tf.where(relative < max_exact, relative, large)


class TFT5Attention(tf_keras.layers.Layer):
    def __init__(self, config: T5Config, scope: str, has_bias: bool, causal: bool) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1])
        self.heads, self.d_kv, inner = config.num_heads, config.d_kv, config.num_heads * config.d_kv
        std = config.initializer_factor * (config.d_model**-0.5)
        self.q = TFDense(inner, config.d_model, f"{scope}/q", std * (config.d_kv**-0.5), use_bias=False)
        self.k = TFDense(inner, config.d_model, f"{scope}/k", std, use_bias=False)
        self.v = TFDense(inner, config.d_model, f"{scope}/v", std, use_bias=False)
        self.o = TFDense(config.d_model, inner, f"{scope}/o", config.initializer_factor * inner**-0.5, use_bias=False)
        self.causal, self.buckets, self.max_distance = causal, config.relative_attention_num_buckets, \
            config.relative_attention_max_distance  # fmt: skip
        self.relative_attention_bias = (TFEmbedding(self.buckets, self.heads, f"{scope}/relative_attention_bias", std)
                                        if has_bias else None)  # fmt: skip

    def position_bias(self, start: Any, seq: int, keys: Any) -> tf.Tensor:
        """`[1, H, S, T]`: the learned bias of each (query `start + i`, key j) offset."""
        query = tf.cast(start, tf.int32) + tf.range(seq)
        relative = tf.range(keys)[None, :] - query[:, None]  # [S, T]
        buckets = relative_position_bucket(relative, not self.causal, self.buckets, self.max_distance)
        return tf.transpose(self.relative_attention_bias(buckets), [2, 0, 1])[None]

    def split(self, x: tf.Tensor) -> tf.Tensor:
        b, s = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [b, s, self.heads, self.d_kv]), [0, 2, 1, 3])  # [B, H, S, D]

    def call(self, x: tf.Tensor, bias: tf.Tensor, kv: tuple) -> tf.Tensor:
        """`x` `[B, S, E]` attends keys/values `kv` `[B, H, T, D]` with the additive `bias` (mask + positions)."""
        scores = tf.matmul(self.split(self.q(x)), kv[0], transpose_b=True) + bias  # no 1/sqrt(D) in T5
        out = tf.transpose(tf.matmul(tf.nn.softmax(scores, axis=-1), kv[1]), [0, 2, 1, 3])
        return self.o(tf.reshape(out, [tf.shape(x)[0], tf.shape(x)[1], self.heads * self.d_kv]))


class TFT5FF(tf_keras.layers.Layer):
    def __init__(self, config: T5Config, scope: str) -> None:
        super().__init__(name="DenseReluDense")
        e, f, fac = config.d_model, config.d_ff, config.initializer_factor
        self.gated = config.is_gated_act
        names = ("wi_0", "wi_1") if self.gated else ("wi",)
        self.wi = [TFDense(f, e, f"{scope}/{n}", fac * e**-0.5, use_bias=False) for n in names]
        self.wo = TFDense(e, f, f"{scope}/wo", fac * f**-0.5, use_bias=False)
        self.act = get_activation(config.dense_act_fn)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        h = self.act(self.wi[0](x))
        return self.wo(h * self.wi[1](x) if self.gated else h)


class TFT5Block(tf_keras.layers.Layer):
    def __init__(self, config: T5Config, scope: str, decoder: bool, has_bias: bool) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1])
        eps = config.layer_norm_epsilon
        self.self_attn = TFT5Attention(config, f"{scope}/layer_._0/SelfAttention", has_bias, decoder)
        self.self_norm = TFRMSNorm(config.d_model, eps, f"{scope}/layer_._0/layer_norm")
        self.cross_attn = self.cross_norm = None
        if decoder:
            self.cross_attn = TFT5Attention(config, f"{scope}/layer_._1/EncDecAttention", False, False)
            self.cross_norm = TFRMSNorm(config.d_model, eps, f"{scope}/layer_._1/layer_norm")
        ff = f"{scope}/layer_._{2 if decoder else 1}"
        self.ff = TFT5FF(config, f"{ff}/DenseReluDense")
        self.ff_norm = TFRMSNorm(config.d_model, eps, f"{ff}/layer_norm")

    def call(self, x, self_bias, cache, start, cross_bias=None, cross_kv=None):  # noqa: ANN001, ANN201
        h = self.self_norm(x)
        k, v = self.self_attn.split(self.self_attn.k(h)), self.self_attn.split(self.self_attn.v(h))
        if cache is not None:
            k, v = update_cache(cache[0], k, start), update_cache(cache[1], v, start)
        x = x + self.self_attn(h, self_bias, (k, v))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), cross_bias, cross_kv)
        return x + self.ff(self.ff_norm(x)), (k, v)


class TFT5Stack(tf_keras.layers.Layer):
    def __init__(self, config: T5Config, shared: TFEmbedding, decoder: bool) -> None:
        name = "decoder" if decoder else "encoder"
        super().__init__(name=name)
        self.decoder, self.shared = decoder, shared
        layers = config.num_decoder_layers if decoder else config.num_layers
        self.block = [TFT5Block(config, f"{name}/block_._{i}", decoder, i == 0) for i in range(layers)]
        self.final_layer_norm = TFRMSNorm(config.d_model, config.layer_norm_epsilon, f"{name}/final_layer_norm")

    def run(self, ids, mask, caches=None, start=0, cross_bias=None, cross_kvs=None):  # noqa: ANN001, ANN201
        """Encoder: `mask` `[B, L]`. Decoder: `mask` `[B, T]` over the cache, `cross_kvs` per block."""
        x = self.shared(ids)
        seq = tf.shape(ids)[1]
        bias = attention_bias(mask, start, seq, causal=self.decoder)  # [B, 1, S, T]
        bias = bias + self.block[0].self_attn.position_bias(start, seq, tf.shape(mask)[1])
        new_caches = []
        for i, block in enumerate(self.block):
            x, kv = block(x, bias, None if caches is None else caches[i], start, cross_bias,
                          None if cross_kvs is None else cross_kvs[i])  # fmt: skip
            new_caches.append(kv)
        return self.final_layer_norm(x), new_caches


class TFT5ForConditionalGeneration(TFPreTrainedModel):
    """T5 with its LM head (transformers' `TFT5ForConditionalGeneration`); `generate()` runs on the engine.

    Example:
        >>> model = TFT5ForConditionalGeneration.from_pretrained("./t5-small")
        >>> model.generate(tf.constant([[13, 7, 1]]), max_new_tokens=8, num_beams=2)
    """

    config_class = T5Config
    base_model_prefix = "transformer"
    _tf_convert = convert
    _keys_to_ignore_on_load_unexpected = [r"EncDecAttention/relative_attention_bias"]

    def __init__(self, config: T5Config, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.shared = TFEmbedding(config.vocab_size, config.d_model, "shared", config.initializer_factor)
        self.encoder = TFT5Stack(config, self.shared, decoder=False)
        self.decoder = TFT5Stack(config, self.shared, decoder=True)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = TFDense(config.vocab_size, config.d_model, "lm_head", config.initializer_factor, False)

    def get_input_embeddings(self) -> TFEmbedding:
        return self.shared

    def set_input_embeddings(self, value: TFEmbedding) -> None:
        self.shared = self.encoder.shared = self.decoder.shared = value

    def get_output_embeddings(self) -> Any:
        return self.shared if self.lm_head is None else self.lm_head

    def get_encoder(self) -> TFT5Stack:
        return self.encoder

    def _h5_layers(self, name: str) -> list[str]:
        # transformers stores the shared table under "shared" and again with each stack
        return ["shared", "encoder", "decoder"] if name == "shared/embeddings:0" else [name.split("/", 1)[0]]

    def _h5_name(self, name: str) -> str:
        return "/shared/shared/embeddings:0" if name == "shared/embeddings:0" else name

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        if self.lm_head is None:
            return self.shared.attend(x * (self.config.d_model**-0.5))  # tied head: rescale first (T5)
        return self.lm_head(x)

    def _cross(self, encoded: tf.Tensor, encoder_mask: tf.Tensor) -> tuple[list, tf.Tensor]:
        """Cross-attention keys/values per decoder block and the encoder padding bias `[B, 1, 1, L]`."""
        kvs = [(b.cross_attn.split(b.cross_attn.k(encoded)), b.cross_attn.split(b.cross_attn.v(encoded)))
               for b in self.decoder.block]  # fmt: skip
        bias = (1.0 - tf.cast(encoder_mask, tf.float32))[:, None, None, :] * tf.float32.min
        return kvs, bias

    def call(self, input_ids=None, attention_mask=None, decoder_input_ids=None, labels=None, encoder_outputs=None,
             return_dict=None, training=False, **kwargs: Any) -> TFSeq2SeqLMOutput:  # noqa: ANN001  # fmt: skip
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (or encoder_outputs) to the T5 forward.")
            mask = tf.ones_like(input_ids, tf.int32) if attention_mask is None else tf.cast(attention_mask, tf.int32)
            encoded = self.encoder.run(input_ids, mask)[0]
        else:
            encoded = encoder_outputs[0]
            mask = tf.ones(tf.shape(encoded)[:2], tf.int32) if attention_mask is None else attention_mask
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass decoder_input_ids or labels to the T5 forward.")
            start = tf.fill([tf.shape(labels)[0], 1], self.config.decoder_start_token_id)
            decoder_input_ids = tf.concat([start, tf.where(labels[:, :-1] == -100, self.config.pad_token_id,
                                                           labels[:, :-1])], axis=1)  # fmt: skip
        kvs, cross_bias = self._cross(encoded, mask)
        dec_mask = tf.ones(tf.shape(decoder_input_ids)[:2], tf.int32)
        x, _ = self.decoder.run(decoder_input_ids, dec_mask, None, 0, cross_bias, kvs)
        logits = self._logits(x)
        loss = None
        if labels is not None:
            keep = labels != -100
            loss = tf.reduce_mean(tf.boolean_mask(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.where(keep, labels, 0), logits), keep))  # fmt: skip
        return TFSeq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoded)

    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        sig = dict(super().input_signature)
        sig["decoder_input_ids"] = tf.TensorSpec([None, None], tf.int32, name="decoder_input_ids")
        return sig

    # -- engine-facing ---------------------------------------------------------------------------------
    def tf_prefill(self, encoder_ids: tf.Tensor, encoder_mask: tf.Tensor, decoder_ids: tf.Tensor,
                   max_length: int) -> tuple[tf.Tensor, dict]:  # fmt: skip
        encoder_mask = tf.cast(encoder_mask, tf.int32)
        encoded = self.encoder.run(tf.cast(encoder_ids, tf.int32), encoder_mask)[0]
        cross, cross_bias = self._cross(encoded, encoder_mask)
        cfg = self.config
        shape = [tf.shape(encoded)[0], cfg.num_heads, max_length, cfg.d_kv]
        caches = [(tf.zeros(shape), tf.zeros(shape)) for _ in range(cfg.num_decoder_layers)]
        mask = tf.ones([tf.shape(encoded)[0], max_length], tf.int32)
        x, caches = self.decoder.run(tf.cast(decoder_ids, tf.int32), mask, caches, 0, cross_bias, cross)
        state = {"caches": caches, "cross": cross, "cross_bias": cross_bias, "mask": mask}
        return self._logits(x[:, -1]), state

    def tf_decode(self, state: dict, tokens: tf.Tensor, cur: Any) -> tuple[tf.Tensor, dict]:
        start = tf.cast(cur, tf.int32) - 1
        x, caches = self.decoder.run(tf.cast(tokens, tf.int32)[:, None], state["mask"], state["caches"], start,
                                     state["cross_bias"], state["cross"])  # fmt: skip
        return self._logits(x[:, -1]), {**state, "caches": caches}

    def tf_reorder(self, state: dict, index: tf.Tensor) -> dict:
        pairs = {k: [(tf.gather(a, index), tf.gather(b, index)) for a, b in state[k]] for k in ("caches", "cross")}
        return {**state, **pairs, "cross_bias": tf.gather(state["cross_bias"], index),
                "mask": tf.gather(state["mask"], index)}  # fmt: skip

