"""BERT in TensorFlow (Keras), weight for weight transformers' `TFBertModel` (encoder + pooler).

Variables carry transformers' TF names (`bert/encoder/layer_._0/attention/self/query/kernel:0`), so
`tf_model.h5` files load in either library; `from_pt` goes through `convert.pt_to_tf`. Unlike transformers'
TF BERT, `prune_heads` works here (it slices the projections, as the PyTorch model does).

Shapes: `B` batch, `S` positions, `H` heads, `D` head dim, `E` hidden.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tf_keras

from pyengine.backends.tf import tf
from pyengine.backends.tf.layers import TFDense, TFEmbedding, TFLayerNorm, get_activation
from pyengine.modeling_tf_utils import TFBaseModelOutputWithPoolingAndCrossAttentions, TFPreTrainedModel
from pyengine.models.bert import convert
from pyengine.models.bert.config import BertConfig


class TFBertEmbeddings(tf_keras.layers.Layer):
    def __init__(self, config: BertConfig, scope: str) -> None:
        super().__init__(name="embeddings")
        e, std = config.hidden_size, config.initializer_range
        self.word_embeddings = TFEmbedding(config.vocab_size, e, f"{scope}/word_embeddings", std, weight_name="weight")
        self.position_embeddings = TFEmbedding(config.max_position_embeddings, e, f"{scope}/position_embeddings", std)
        self.token_type_embeddings = TFEmbedding(config.type_vocab_size, e, f"{scope}/token_type_embeddings", std)
        self.LayerNorm = TFLayerNorm(e, config.layer_norm_eps, f"{scope}/LayerNorm")

    def call(self, input_ids, token_type_ids, position_ids, inputs_embeds):  # noqa: ANN001, ANN201
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # [B, S, E]
        x = x + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(position_ids))


class TFBertLayer(tf_keras.layers.Layer):
    """Self-attention (+ residual LayerNorm), then the feed-forward (+ residual LayerNorm)."""

    def __init__(self, config: BertConfig, scope: str) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1])
        e, i, std, eps = config.hidden_size, config.intermediate_size, config.initializer_range, config.layer_norm_eps
        self.heads, self.head_dim = config.num_attention_heads, e // config.num_attention_heads
        self.query = TFDense(e, e, f"{scope}/attention/self/query", std)
        self.key = TFDense(e, e, f"{scope}/attention/self/key", std)
        self.value = TFDense(e, e, f"{scope}/attention/self/value", std)
        self.attention_dense = TFDense(e, e, f"{scope}/attention/output/dense", std)
        self.attention_norm = TFLayerNorm(e, eps, f"{scope}/attention/output/LayerNorm")
        self.intermediate = TFDense(i, e, f"{scope}/intermediate/dense", std)
        self.output_dense = TFDense(e, i, f"{scope}/output/dense", std)
        self.output_norm = TFLayerNorm(e, eps, f"{scope}/output/LayerNorm")
        self.act = get_activation(config.hidden_act)

    def _split(self, x: tf.Tensor) -> tf.Tensor:
        b, s = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [b, s, self.heads, self.head_dim]), [0, 2, 1, 3])  # [B, H, S, D]

    def call(self, x: tf.Tensor, bias: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / float(np.sqrt(self.head_dim)) + bias, axis=-1)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])
        context = tf.reshape(context, [tf.shape(x)[0], tf.shape(x)[1], self.heads * self.head_dim])
        x = self.attention_norm(self.attention_dense(context) + x)
        return self.output_norm(self.output_dense(self.act(self.intermediate(x))) + x), probs

    def prune(self, heads: list[int]) -> None:
        """Drop `heads` (indices among the remaining ones): q/k/v output columns, the output projection's rows."""
        keep = np.array([h for h in range(self.heads) if h not in set(heads)], dtype=np.int64)
        cols = (keep[:, None] * self.head_dim + np.arange(self.head_dim)[None]).reshape(-1)
        for dense in (self.query, self.key, self.value):
            _shrink(dense, "kernel", np.asarray(dense.kernel)[:, cols])
            _shrink(dense, "bias", np.asarray(dense.bias)[cols])
        _shrink(self.attention_dense, "kernel", np.asarray(self.attention_dense.kernel)[cols])
        self.heads = len(keep)


def _shrink(layer: tf_keras.layers.Layer, attr: str, value: np.ndarray) -> None:
    old = getattr(layer, attr)
    setattr(layer, attr, tf.Variable(value, name=old.name.removesuffix(":0"), trainable=old.trainable))


class TFBertMainLayer(tf_keras.layers.Layer):
    """Embeddings, `num_hidden_layers` layers, pooler (scope `bert`)."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True, name: str = "bert") -> None:
        super().__init__(name=name)
        self.config = config
        self.embeddings = TFBertEmbeddings(config, f"{name}/embeddings")
        self.layer = [TFBertLayer(config, f"{name}/encoder/layer_._{i}") for i in range(config.num_hidden_layers)]
        self.pooler = (TFDense(config.hidden_size, config.hidden_size, f"{name}/pooler/dense", config.initializer_range)
                       if add_pooling_layer else None)  # fmt: skip

    def get_input_embeddings(self) -> TFEmbedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: TFEmbedding) -> None:
        self.embeddings.word_embeddings = value

    def _prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        for layer, heads in heads_to_prune.items():
            self.layer[layer].prune(heads)

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             output_attentions=False, output_hidden_states=False, training=False, **unused: Any):  # noqa: ANN001, ANN201  # fmt: skip
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You have to specify exactly one of input_ids or inputs_embeds")
        shape = tf.shape(input_ids if input_ids is not None else inputs_embeds)[:2]
        if attention_mask is None:
            attention_mask = tf.ones(shape, tf.int32)
        if token_type_ids is None:
            token_type_ids = tf.zeros(shape, tf.int32)
        if position_ids is None:
            position_ids = tf.range(shape[1])[None]
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        bias = (1.0 - tf.cast(attention_mask, tf.float32))[:, None, None, :] * tf.float32.min  # [B, 1, 1, S]
        hidden, attentions = [], []
        for layer in self.layer:
            hidden.append(x)
            x, probs = layer(x, bias)
            attentions.append(probs)
        hidden.append(x)
        pooled = tf.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return TFBaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x, pooler_output=pooled, hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class TFBertPreTrainedModel(TFPreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    _tf_convert = convert
    _keys_to_ignore_on_load_unexpected = [r"^cls/", r"^mlm___cls", r"^nsp___cls", r"^dropout"]


class TFBertModel(TFBertPreTrainedModel):
    """The bare BERT encoder with its pooler (transformers' `TFBertModel`).

    Example:
        >>> model = TFBertModel.from_pretrained("./bert", output_attentions=True)
        >>> model(tf.constant([[101, 7592, 102]])).last_hidden_state.shape
        TensorShape([1, 3, 768])
    """

    def __init__(self, config: BertConfig, *inputs: Any, add_pooling_layer: bool = True, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.bert = TFBertMainLayer(config, add_pooling_layer, name="bert")
        if config.pruned_heads:  # a pruned checkpoint reloads pruned
            self.bert._prune_heads({int(k): v for k, v in config.pruned_heads.items()})

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             output_attentions=None, output_hidden_states=None, return_dict=None, training=False, **kwargs: Any):  # noqa: ANN001, ANN201  # fmt: skip
        cfg = self.config
        return self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids, inputs_embeds=inputs_embeds,
                         output_attentions=cfg.output_attentions if output_attentions is None else output_attentions,
                         output_hidden_states=(cfg.output_hidden_states if output_hidden_states is None
                                               else output_hidden_states))  # fmt: skip

    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        sig = dict(super().input_signature)
        sig["token_type_ids"] = tf.TensorSpec([None, None], tf.int32, name="token_type_ids")
        return sig
