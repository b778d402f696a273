"""T5Config: transformers' T5 configuration, field names and defaults as in 4.57."""

from __future__ import annotations

from typing import Any

from pyengine.configuration_utils import PretrainedConfig


class T5Config(PretrainedConfig):
    """Configuration of a T5 encoder-decoder (HF `T5Config`; also T5 v1.1 / Flan-T5 with a gated FF).

    Args:
        vocab_size: tokens `V`.
        d_model: model width (`hidden_size`).
        d_kv: per-head width `D` of the attention projections (inner width is `num_heads * d_kv`).
        d_ff: feed-forward width.
        num_layers: encoder layers (`num_hidden_layers`).
        num_decoder_layers: decoder layers; None means `num_layers`.
        num_heads: attention heads `H` (`num_attention_heads`).
        relative_attention_num_buckets: buckets of the relative position bias.
        relative_attention_max_distance: distance beyond which positions share the last bucket.
        dropout_rate: dropout everywhere (training only).
        layer_norm_epsilon: epsilon of the RMS-style layer norms.
        initializer_factor: scales every init std (kept at 1 except in init tests).
        feed_forward_proj: "relu" (T5), "gated-gelu" (T5 v1.1, Flan-T5), or "{act}" / "gated-{act}".
        is_encoder_decoder: True.
        use_cache: return the decoder cache by default.
        pad_token_id, eos_token_id: special ids (0 and 1). `decoder_start_token_id` defaults to None as in
            transformers; T5 checkpoints set it to 0 (the pad id) in their config.json.
        classifier_dropout: dropout of the classification head (kept for file compatibility).

    Derived:
        dense_act_fn: the FF activation name ("gated-gelu" means transformers' "gelu_new").
        is_gated_act: whether the FF is gated (`wi_0`, `wi_1`, `wo`).

    Example:
        >>> cfg = T5Config(d_model=64, num_layers=2, feed_forward_proj="gated-gelu")
        >>> cfg.num_decoder_layers, cfg.dense_act_fn, cfg.is_gated_act, cfg.hidden_size
        (2, 'gelu_new', True, 64)
    """

    model_type = "t5"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "num_heads",
        "num_hidden_layers": "num_layers",
        "head_dim": "d_kv",
    }

    def __init__(
        self,
        vocab_size: int = 32128,
        d_model: int = 512,
        d_kv: int = 64,
        d_ff: int = 2048,
        num_layers: int = 6,
        num_decoder_layers: int | None = None,
        num_heads: int = 8,
        relative_attention_num_buckets: int = 32,
        relative_attention_max_distance: int = 128,
        dropout_rate: float = 0.1,
        layer_norm_epsilon: float = 1e-6,
        initializer_factor: float = 1.0,
        feed_forward_proj: str = "relu",
        is_encoder_decoder: bool = True,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        eos_token_id: int | list[int] | None = 1,
        classifier_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.d_kv = d_kv
        self.d_ff = d_ff
        self.num_layers = num_layers
        self.num_decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
        self.num_heads = num_heads
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.dropout_rate = dropout_rate
        self.classifier_dropout = classifier_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_factor = initializer_factor
        self.feed_forward_proj = feed_forward_proj
        self.use_cache = use_cache

        parts = feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(
                f"`feed_forward_proj`: {feed_forward_proj} is not a valid activation function of the "
                "dense layer. Please make sure `feed_forward_proj` is of the format `gated-{ACT_FN}` or "
                "`{ACT_FN}`, e.g. 'gated-gelu' or 'relu'"
            )
        self.dense_act_fn = parts[-1]
        self.is_gated_act = parts[0] == "gated"
        if feed_forward_proj == "gated-gelu":  # T5 v1.1 was trained with the tanh approximation
            self.dense_act_fn = "gelu_new"

        super().__init__(
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            is_encoder_decoder=is_encoder_decoder,
            **kwargs,
        )
