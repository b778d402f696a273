"""BERT in PyTorch, parameter for parameter transformers' `BertModel` (encoder with pooler).

Read top to bottom: embeddings → self-attention → attention output → feed-forward → layer → encoder →
pooler → model. Parameter names match transformers (`embeddings.LayerNorm`, `encoder.layer.0.attention.
self.query`, `pooler.dense`, ...), so checkpoints (safetensors or `.bin`) load in either library unchanged.

Attention runs through SDPA with the additive mask of `get_extended_attention_mask`; the eager path
(explicit softmax, transformers' `BertSelfAttention`) runs when probabilities or a head mask are asked for,
or with `attn_implementation="eager"`. Encoder only: no cross-attention and no KV cache.

Shapes: `B` batch, `S` tokens, `H` heads, `D` head dim, `E` hidden, `L` layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyengine.backends.torch.functional import get_activation
from pyengine.modeling_mixins import find_pruneable_heads_and_indices, prune_linear_layer
from pyengine.modeling_utils import PreTrainedModel
from pyengine.models.bert import convert
from pyengine.models.bert.config import BertConfig
from pyengine.utils.model_output import ModelOutput


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    """BERT output (HF `BaseModelOutputWithPoolingAndCrossAttentions`).

    Args:
        last_hidden_state: `[B, S, E]` output of the last layer.
        pooler_output: `[B, E]` tanh(dense(first token)); None without a pooling layer.
        hidden_states: `L + 1` tensors `[B, S, E]` (embeddings first).
        past_key_values, cross_attentions: always None (encoder only).
        attentions: `L` tensors `[B, H, S, S]` of attention probabilities.
    """

    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: tuple[Any, ...] | None = None
    past_key_values: Any = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


class BertEmbeddings(nn.Module):
    """Word + token-type + absolute position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # TF-era name, kept
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        positions = torch.arange(config.max_position_embeddings).expand((1, -1))
        self.register_buffer("position_ids", positions, persistent=False)  # [1, max_positions]
        self.register_buffer("token_type_ids", torch.zeros_like(positions), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # [B, S, E]
        batch, seq = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = self.position_ids[:, :seq]  # [1, S]
        if token_type_ids is None:
            token_type_ids = self.token_type_ids[:, :seq].expand(batch, seq)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate `query`, `key`, `value` projections."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({config.num_attention_heads})")  # fmt: skip
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size  # shrinks when heads are pruned
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[:2]
        return x.view(batch, seq, self.num_attention_heads, self.attention_head_size).transpose(1, 2)  # [B, H, S, D]

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        head_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states [B, S, E]`, additive `mask [B, 1, 1|S, S]` → `(context [B, S, H*D], probs or None)`."""
        batch, seq = hidden_states.shape[:2]
        query, key, value = (self._heads(proj(hidden_states)) for proj in (self.query, self.key, self.value))
        eager = output_attentions or head_mask is not None or self.config._attn_implementation == "eager"
        probs = None
        if eager:  # transformers' BertSelfAttention: softmax in the model dtype
            scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.attention_head_size)  # [B, H, S, S]
            if mask is not None:
                scores = scores + mask
            probs = self.dropout(F.softmax(scores, dim=-1))
            if head_mask is not None:
                probs = probs * head_mask  # [1, H, 1, 1] keep-mask
            context = torch.matmul(probs, value)  # [B, H, S, D]
        else:
            dropout_p = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
        return context.transpose(1, 2).reshape(batch, seq, self.all_head_size), probs


class BertSelfOutput(nn.Module):
    """Projection back to `E`, dropout, residual + LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    """Self-attention and its output block; owns head pruning (transformers `BertAttention.prune_heads`)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)
        self.pruned_heads: set[int] = set()

    def prune_heads(self, heads: list[int]) -> None:
        """Remove `heads` (original indices): rows of Q/K/V, columns of the output projection."""
        if len(heads) == 0:
            return
        attn = self.self
        heads, index = find_pruneable_heads_and_indices(
            heads, attn.num_attention_heads, attn.attention_head_size, self.pruned_heads
        )
        attn.query = prune_linear_layer(attn.query, index)
        attn.key = prune_linear_layer(attn.key, index)
        attn.value = prune_linear_layer(attn.value, index)
        self.output.dense = prune_linear_layer(self.output.dense, index, dim=1)
        attn.num_attention_heads -= len(heads)
        attn.all_head_size = attn.attention_head_size * attn.num_attention_heads
        self.pruned_heads = self.pruned_heads | heads

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None, head_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        context, probs = self.self(hidden_states, mask, head_mask, output_attentions)
        return self.output(context, hidden_states), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        act = config.hidden_act
        self.intermediate_act_fn: Callable[[torch.Tensor], torch.Tensor] = get_activation(act) if isinstance(act, str) else act

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertLayer(nn.Module):
    """Post-LayerNorm block: attention, then the feed-forward, optionally in chunks along the sequence."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def feed_forward_chunk(self, attention_output: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(attention_output), attention_output)

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None, head_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        attention_output, probs = self.attention(hidden_states, mask, head_mask, output_attentions)
        if self.chunk_size_feed_forward > 0:  # same result, less peak memory (transformers apply_chunking_to_forward)
            chunks = attention_output.split(self.chunk_size_feed_forward, dim=1)
            return torch.cat([self.feed_forward_chunk(c) for c in chunks], dim=1), probs
        return self.feed_forward_chunk(attention_output), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token)): the sentence vector `[B, E]`."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPreTrainedModel(PreTrainedModel):
    """Loading rules and weight init shared by the BERT classes."""

    config_class = BertConfig
    base_model_prefix = "bert"

    @classmethod
    def _convert_state_dict(cls, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return convert.from_pt(arrays)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' BERT init: normal(0, initializer_range) for Linear/Embedding (pad row 0), 1/0 for LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, `num_hidden_layers` layers, and (by default) the pooler.

    Example:
        >>> model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        ...                              intermediate_size=128))
        >>> out = model(torch.tensor([[101, 7, 8, 102]]))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([1, 4, 64]), torch.Size([1, 64]))
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        if config.add_cross_attention:
            raise NotImplementedError("BERT cross-attention (add_cross_attention=True) is not supported by pyengine.")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise NotImplementedError(f"position_embedding_type={config.position_embedding_type!r} is not supported; "
                                      "pyengine's BERT has absolute position embeddings only.")  # fmt: skip
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def _prune_heads(self, heads_to_prune: Mapping[int, list[int]]) -> None:
        """`{layer: [heads]}`; see `PreTrainedModel.prune_heads`."""
        for layer, heads in heads_to_prune.items():
            self.encoder.layer[layer].attention.prune_heads(heads)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple[Any, ...]:
        """Encode `S` tokens (argument order as transformers' `BertModel.forward`).

        Args:
            input_ids: `[B, S]` token ids (or `inputs_embeds` `[B, S, E]`).
            attention_mask: `[B, S]` 1 = token, 0 = padding (or `[B, S, S]`); default all ones.
            token_type_ids: `[B, S]` segment ids; default zeros.
            position_ids: `[B, S]` or `[1, S]`; default `0 .. S-1`.
            head_mask: `[H]` or `[L, H]`, 1 keeps a head, 0 silences it.
            output_attentions, output_hidden_states, return_dict: as in transformers.
        """
        if encoder_hidden_states is not None or past_key_values is not None:
            raise NotImplementedError("pyengine's BERT is an encoder: encoder_hidden_states and past_key_values "
                                      "are not supported.")  # fmt: skip
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        input_shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
        device = input_ids.device if input_ids is not None else inputs_embeds.device

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # [B, S, E]
        if attention_mask is None:
            attention_mask = torch.ones(input_shape, device=device)
        mask = self.get_extended_attention_mask(attention_mask, input_shape)  # [B, 1, 1|S, S] additive
        head_masks = self.get_head_mask(head_mask, cfg.num_hidden_layers)  # [L, 1, H, 1, 1] or [None] * L

        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        all_attn: tuple[torch.Tensor, ...] | None = () if output_attentions else None
        for layer, layer_head_mask in zip(self.encoder.layer, head_masks):
            if all_hidden is not None:
                all_hidden += (hidden_states,)
            hidden_states, probs = layer(hidden_states, mask, layer_head_mask, output_attentions)
            if all_attn is not None:
                all_attn += (probs,)
        if all_hidden is not None:
            all_hidden += (hidden_states,)
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden, attentions=all_attn
        )
        return out if return_dict else out.to_tuple()
