"""LlamaConfig: transformers' LLaMA configuration, field names and defaults as in 4.57."""

from __future__ import annotations

from typing import Any

from pyengine.configuration_utils import PretrainedConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class LlamaConfig(PretrainedConfig):
    """Configuration of a LLaMA model (HF `LlamaConfig`).

    Args:
        vocab_size: tokens `V`.
        hidden_size: model width.
        intermediate_size: gated-MLP width.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads `H`.
        num_key_value_heads: key/value heads `H_kv` (GQA when < H; None means H).
        hidden_act: MLP activation ("silu").
        max_position_embeddings: longest sequence the RoPE tables are built for up front.
        initializer_range: std of the normal init.
        rms_norm_eps: RMSNorm epsilon.
        use_cache: return the KV cache by default.
        pretraining_tp: kept for file compatibility (transformers 4.57 ignores it too).
        tie_word_embeddings: share the embedding matrix with the LM head.
        rope_theta: RoPE base.
        rope_scaling: None, or {"rope_type": "linear", "factor": f} or the "llama3" dict
            (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
        attention_bias, mlp_bias: biases on the projections.
        attention_dropout: attention dropout (training only).
        head_dim: per-head width `D`; None means hidden_size // num_attention_heads.

    Example:
        >>> cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
        >>> cfg.head_dim
        16
    """

    model_type = "llama"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        pretraining_tp: int = 1,
        tie_word_embeddings: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        head_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.pretraining_tp = pretraining_tp
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        if self.rope_scaling is not None and "type" in self.rope_scaling:  # BC: "type" was renamed "rope_type"
            self.rope_scaling["rope_type"] = self.rope_scaling["type"]
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
