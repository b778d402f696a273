"""Output records of the PyTorch models, with transformers' class names, field names and field order.

Each is a `ModelOutput` (HF semantics: attribute, key and index access; `None` fields are skipped).
Shapes use the glossary of STYLE.md: `B` batch, `S` new tokens, `T` total length, `V` vocab, `H` heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyengine.utils.model_output import ModelOutput


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    """Decoder stack output (HF `BaseModelOutputWithPast`).

    Args:
        last_hidden_state: `[B, S, hidden]` after the final norm.
        past_key_values: the `KVCache` holding every position seen so far (when `use_cache`).
        hidden_states: `num_layers + 1` tensors `[B, S, hidden]` (embeddings first, final norm last).
        attentions: `num_layers` tensors `[B, H, S, T]` of attention probabilities.
    """

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    """GPT-2 stack output (HF `BaseModelOutputWithPastAndCrossAttentions`); fields as above plus
    `cross_attentions` (always None here: cross-attention is not implemented)."""

    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    """Language-model head output (HF `CausalLMOutputWithPast`).

    Args:
        loss: mean next-token cross entropy when `labels` were given.
        logits: `[B, S_kept, V]` in the model dtype (`S_kept` follows `logits_to_keep`).
        past_key_values, hidden_states, attentions: as in `BaseModelOutputWithPast`.
    """

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    """GPT-2 LM head output (HF `CausalLMOutputWithCrossAttentions`)."""

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None


@dataclass
class BaseModelOutput(ModelOutput):
    """Encoder stack output (HF `BaseModelOutput`).

    Args:
        last_hidden_state: `[B, S, hidden]` after the final norm.
        hidden_states: `num_layers + 1` tensors `[B, S, hidden]` (embeddings first, final norm last).
        attentions: `num_layers` tensors `[B, H, S, S]` of attention probabilities.
    """

    last_hidden_state: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    """Encoder-decoder base model output (HF `Seq2SeqModelOutput`).

    Args:
        last_hidden_state: decoder output `[B, S_dec, hidden]`.
        past_key_values: the decoder cache (self-attention plus cross-attention K/V), when `use_cache`.
        decoder_hidden_states, decoder_attentions: decoder stack's, as in `BaseModelOutputWithPast`.
        cross_attentions: `num_decoder_layers` tensors `[B, H, S_dec, S_enc]`.
        encoder_last_hidden_state, encoder_hidden_states, encoder_attentions: the encoder's `BaseModelOutput`.
    """

    last_hidden_state: Any = None
    past_key_values: Any = None
    decoder_hidden_states: tuple[Any, ...] | None = None
    decoder_attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple[Any, ...] | None = None
    encoder_attentions: tuple[Any, ...] | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    """Encoder-decoder language-model output (HF `Seq2SeqLMOutput`).

    Args:
        loss: mean cross entropy of `logits` against `labels` (no shift: labels are the decoder targets).
        logits: `[B, S_dec, V]`.
        (others): as in `Seq2SeqModelOutput`.
    """

    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: tuple[Any, ...] | None = None
    decoder_attentions: tuple[Any, ...] | None = None
    cross_attentions: tuple[Any, ...] | None = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple[Any, ...] | None = None
    encoder_attentions: tuple[Any, ...] | None = None
