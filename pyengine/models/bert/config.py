"""BertConfig: transformers' BERT configuration, field names and defaults as in 4.57."""

from __future__ import annotations

from typing import Any

from pyengine.configuration_utils import PretrainedConfig


class BertConfig(PretrainedConfig):
    """Configuration of a BERT encoder (HF `BertConfig`).

    Args:
        vocab_size: tokens in the vocabulary `V`.
        hidden_size: `E`.
        num_hidden_layers: encoder layers `L`.
        num_attention_heads: heads `H` per layer.
        intermediate_size: feed-forward width.
        hidden_act: feed-forward activation ("gelu" is the exact erf GELU).
        hidden_dropout_prob, attention_probs_dropout_prob: dropout probabilities (training only).
        max_position_embeddings: learned absolute positions.
        type_vocab_size: segment (token type) ids.
        initializer_range: std of the normal init.
        layer_norm_eps: LayerNorm epsilon.
        pad_token_id: padding id (its embedding row is zero at init).
        position_embedding_type: "absolute" (the relative variants are not implemented in pyengine).
        use_cache, classifier_dropout: kept for file compatibility (decoder / head options).

    Example:
        >>> cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        >>> cfg.model_type, cfg.num_attention_heads
        ('bert', 4)
    """

    model_type = "bert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        position_embedding_type: str = "absolute",
        use_cache: bool = True,
        classifier_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.use_cache = use_cache
        self.classifier_dropout = classifier_dropout
