"""BERT in Flax (flax.linen), parameter for parameter transformers 4.x's `FlaxBertModel` (encoder only).

Read top to bottom: embeddings → self-attention → attention output → intermediate/output → layer →
encoder → pooler → model → user class. Parameter paths match transformers' Flax BERT
(`encoder/layer/0/attention/self/query/kernel`, Dense kernels `[in, out]`, LayerNorm `scale`), so
`flax_model.msgpack` files load in either library; `convert.py` maps them to PyTorch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pyengine.backends.jax import functional as F
from pyengine.modeling_flax_utils import FlaxBaseModelOutput, FlaxPreTrainedModel
from pyengine.models.bert import convert
from pyengine.models.bert.config import BertConfig


def _dense(config: BertConfig, features: int, dtype: Any) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, kernel_init=jax.nn.initializers.normal(config.initializer_range))


class FlaxBertEmbeddings(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        init = jax.nn.initializers.normal(c.initializer_range)
        self.word_embeddings = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init, dtype=self.dtype)
        self.position_embeddings = nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=init, dtype=self.dtype)
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init, dtype=self.dtype)
        self.LayerNorm = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype)

    def __call__(self, input_ids: Any, token_type_ids: Any, position_ids: Any) -> Any:
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.LayerNorm(x + self.token_type_embeddings(token_type_ids))


class FlaxBertSelfAttention(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        if c.hidden_size % c.num_attention_heads:
            raise ValueError(f"`hidden_size` ({c.hidden_size}) must be divisible by `num_attention_heads` ({c.num_attention_heads}).")
        self.query = _dense(c, c.hidden_size, self.dtype)
        self.key = _dense(c, c.hidden_size, self.dtype)
        self.value = _dense(c, c.hidden_size, self.dtype)

    def __call__(self, x: Any, mask: Any) -> Any:
        batch, seq = x.shape[:2]
        heads = self.config.num_attention_heads
        shape = (batch, seq, heads, self.config.hidden_size // heads)
        q, k, v = (proj(x).reshape(shape) for proj in (self.query, self.key, self.value))
        out, _ = F.attend(q, k, v, mask, shape[-1] ** -0.5)
        return out.reshape(batch, seq, -1)


class FlaxBertSelfOutput(nn.Module):
    """Projection + residual + LayerNorm (used after attention, and as the layer's `output`)."""

    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = _dense(self.config, self.config.hidden_size, self.dtype)
        self.LayerNorm = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype)

    def __call__(self, x: Any, residual: Any) -> Any:
        return self.LayerNorm(self.dense(x) + residual)


class FlaxBertAttention(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.self = FlaxBertSelfAttention(self.config, self.dtype)
        self.output = FlaxBertSelfOutput(self.config, self.dtype)

    def __call__(self, x: Any, mask: Any) -> Any:
        return self.output(self.self(x, mask), x)


class FlaxBertIntermediate(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = _dense(self.config, self.config.intermediate_size, self.dtype)
        self.act = F.get_activation(self.config.hidden_act)

    def __call__(self, x: Any) -> Any:
        return self.act(self.dense(x))


class FlaxBertLayer(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.attention = FlaxBertAttention(self.config, self.dtype)
        self.intermediate = FlaxBertIntermediate(self.config, self.dtype)
        self.output = FlaxBertSelfOutput(self.config, self.dtype)

    def __call__(self, x: Any, mask: Any) -> Any:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class FlaxBertLayerCollection(nn.Module):
    """The `layer` list: layers named "0", "1", ... (transformers' parameter paths)."""

    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.layers = [FlaxBertLayer(self.config, self.dtype, name=str(i)) for i in range(self.config.num_hidden_layers)]

    def __call__(self, x: Any, mask: Any) -> Any:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class FlaxBertEncoder(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.layer = FlaxBertLayerCollection(self.config, self.dtype)

    def __call__(self, x: Any, mask: Any) -> Any:
        return self.layer(x, mask)


class FlaxBertPooler(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = _dense(self.config, self.config.hidden_size, self.dtype)

    def __call__(self, x: Any) -> Any:
        return jnp.tanh(self.dense(x[:, 0]))


class FlaxBertModule(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32
    add_pooling_layer: bool = True

    def setup(self) -> None:
        self.embeddings = FlaxBertEmbeddings(self.config, self.dtype)
        self.encoder = FlaxBertEncoder(self.config, self.dtype)
        if self.add_pooling_layer:
            self.pooler = FlaxBertPooler(self.config, self.dtype)

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, position_ids: Any = None) -> tuple[Any, Any]:
        batch, seq = input_ids.shape
        token_type_ids = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        position_ids = jnp.broadcast_to(jnp.arange(seq), (batch, seq)) if position_ids is None else position_ids
        mask = F.attention_mask_4d(attention_mask, batch, seq, seq, 0, causal=False)
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids, position_ids), mask)
        return hidden, self.pooler(hidden) if self.add_pooling_layer else None


class FlaxBertModel(FlaxPreTrainedModel):
    config_class = BertConfig
    module_class = FlaxBertModule
    base_model_prefix = "bert"
    convert = convert

    def __init__(self, config: BertConfig, input_shape: tuple[int, ...] = (1, 1), seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(config, self.module_class(config=config, dtype=dtype, **kwargs), input_shape, seed, dtype, _do_init)

    @classmethod
    def _pt_to_flax(cls, arrays: dict[str, Any], config: BertConfig) -> dict[str, Any]:
        return convert.pt_to_flax(arrays)

    def _embedding_path(self) -> tuple[str, ...]:
        base = ("bert",) if "bert" in self.params else ()
        return (*base, "embeddings", "word_embeddings", "embedding")

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, position_ids: Any = None,
                 head_mask: Any = None, params: Any = None, dropout_rng: Any = None, train: bool = False,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None) -> Any:  # fmt: skip
        """Hidden states `[B, S, E]` and the pooled first token `[B, E]` (`head_mask` is not supported)."""
        if head_mask is not None:
            raise NotImplementedError("`head_mask` is not supported by the Flax BERT model; prune heads in PyTorch.")
        ids = jnp.asarray(input_ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"`input_ids` must be an integer array [batch, length], got shape {ids.shape} {ids.dtype}.")
        as_int = lambda x: None if x is None else jnp.asarray(x, dtype=jnp.int32)  # noqa: E731
        hidden, pooled = self.module.apply({"params": self.params if params is None else params}, ids.astype(jnp.int32),
                                           as_int(attention_mask), as_int(token_type_ids), as_int(position_ids))  # fmt: skip
        if return_dict is False:
            return (hidden, pooled)
        return FlaxBaseModelOutput(last_hidden_state=hidden, pooler_output=pooled)
