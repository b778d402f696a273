"""GPT2Config: transformers' GPT-2 configuration, field names and defaults as in 4.57."""

from __future__ import annotations

from typing import Any

from pyengine.configuration_utils import PretrainedConfig


class GPT2Config(PretrainedConfig):
    """Configuration of a GPT-2 model (HF `GPT2Config`).

    Args:
        vocab_size: tokens in the vocabulary `V`.
        n_positions: learned positions (max sequence length).
        n_embd: hidden size.
        n_layer: transformer blocks.
        n_head: attention heads `H`.
        n_inner: MLP width; None means `4 * n_embd`.
        activation_function: "gelu_new" (GPT-2's tanh GELU), "gelu", "relu", "silu", ...
        resid_pdrop, embd_pdrop, attn_pdrop: dropout probabilities (training only).
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: std of the normal init.
        summary_*: sequence-summary head settings (kept for file compatibility; unused here).
        scale_attn_weights: divide scores by sqrt(head_dim).
        use_cache: return the KV cache by default.
        scale_attn_by_inverse_layer_idx: also divide scores by `layer_idx + 1`.
        reorder_and_upcast_attn: compute scores in float32 (always true of our eager path).

    Example:
        >>> cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4)
        >>> cfg.hidden_size, cfg.num_hidden_layers
        (64, 2)
    """

    model_type = "gpt2"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.1,
        embd_pdrop: float = 0.1,
        attn_pdrop: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        summary_type: str = "cls_index",
        summary_use_proj: bool = True,
        summary_activation: str | None = None,
        summary_proj_to_labels: bool = True,
        summary_first_dropout: float = 0.1,
        scale_attn_weights: bool = True,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        scale_attn_by_inverse_layer_idx: bool = False,
        reorder_and_upcast_attn: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.summary_type = summary_type
        self.summary_use_proj = summary_use_proj
        self.summary_activation = summary_activation
        self.summary_first_dropout = summary_first_dropout
        self.summary_proj_to_labels = summary_proj_to_labels
        self.scale_attn_weights = scale_attn_weights
        self.use_cache = use_cache
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.reorder_and_upcast_attn = reorder_and_upcast_attn
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
