"""Generation output classes with transformers 4.57's names and fields (framework-neutral containers).

The pre-4.42 names (`GreedySearchDecoderOnlyOutput`, `SampleDecoderOnlyOutput`, ...) are aliases, as in
transformers 4.57.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyengine.utils.model_output import ModelOutput


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """Greedy / sampling output of a decoder-only model.

    Fields: sequences `[B*n, T]`; scores, logits: tuples (one per new token) of `[B*n, V]`;
    attentions, hidden_states: tuples per new token of tuples per layer; past_key_values: the cache.
    """

    sequences: Any = None
    scores: Any = None
    logits: Any = None
    attentions: Any = None
    hidden_states: Any = None
    past_key_values: Any = None


@dataclass
class GenerateEncoderDecoderOutput(ModelOutput):
    sequences: Any = None
    scores: Any = None
    logits: Any = None
    encoder_attentions: Any = None
    encoder_hidden_states: Any = None
    decoder_attentions: Any = None
    cross_attentions: Any = None
    decoder_hidden_states: Any = None
    past_key_values: Any = None


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    sequences: Any = None
    sequences_scores: Any = None
    scores: Any = None
    logits: Any = None
    beam_indices: Any = None
    attentions: Any = None
    hidden_states: Any = None
    past_key_values: Any = None


@dataclass
class GenerateBeamEncoderDecoderOutput(ModelOutput):
    sequences: Any = None
    sequences_scores: Any = None
    scores: Any = None
    logits: Any = None
    beam_indices: Any = None
    encoder_attentions: Any = None
    encoder_hidden_states: Any = None
    decoder_attentions: Any = None
    cross_attentions: Any = None
    decoder_hidden_states: Any = None
    past_key_values: Any = None


GreedySearchDecoderOnlyOutput = GenerateDecoderOnlyOutput
SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
GreedySearchEncoderDecoderOutput = GenerateEncoderDecoderOutput
SampleEncoderDecoderOutput = GenerateEncoderDecoderOutput
BeamSearchDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput
BeamSampleDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput
BeamSearchEncoderDecoderOutput = GenerateBeamEncoderDecoderOutput
BeamSampleEncoderDecoderOutput = GenerateBeamEncoderDecoderOutput
