"""GPT-2 in TensorFlow (Keras), weight for weight transformers' `TFGPT2Model` / `TFGPT2LMHeadModel`.

Read top to bottom: attention → MLP → block → main layer → models. Variables carry transformers' TF names
(`transformer/h_._0/attn/c_attn/weight:0`), so `tf_model.h5` files load in either library unchanged;
`from_pt` goes through `convert.pt_to_tf`.

Engine contract (TFGPT2LMHeadModel): `tf_prefill(input_ids, mask, max_length)` runs the prompt into a KV
cache preallocated for `max_length` and returns the last position's logits; `tf_decode(state, tokens,
cur)` runs one new token per row. Both are pure functions of tensors, so they trace under XLA.

Shapes: `B` batch, `S` new tokens, `T` cache length, `H` heads, `D` head dim, `E` hidden, `V` vocab.
"""

from __future__ import annotations

from typing import Any

import tf_keras

from pyengine.backends.tf import kernels, tf
from pyengine.backends.tf.layers import (
    TFConv1D,
    TFEmbedding,
    TFLayerNorm,
    attention_bias,
    get_activation,
    left_pad_positions,
    update_cache,
)
from pyengine.modeling_tf_utils import TFBaseModelOutputWithPast, TFCausalLMOutputWithPast, TFPreTrainedModel
from pyengine.models.gpt2 import convert
from pyengine.models.gpt2.config import GPT2Config


class TFGPT2Attention(tf_keras.layers.Layer):
    """Causal self-attention with the fused QKV projection `c_attn` and the output projection `c_proj`."""

    def __init__(self, config: GPT2Config, layer_idx: int, scope: str) -> None:
        super().__init__(name="attn")
        self.num_heads, self.embed_dim = config.n_head, config.n_embd
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)
        self.c_attn = TFConv1D(3 * self.embed_dim, self.embed_dim, f"{scope}/c_attn", config.initializer_range)
        self.c_proj = TFConv1D(self.embed_dim, self.embed_dim, f"{scope}/c_proj", config.initializer_range)
        self.pruned_heads: set[int] = set()

    def _heads(self, x: tf.Tensor) -> tf.Tensor:
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [batch, seq, self.num_heads, self.head_dim]), [0, 2, 1, 3])  # [B, H, S, D]

    def call(self, x: tf.Tensor, bias: tf.Tensor, cache: tuple | None, start: Any,
             nk: tuple = (None, None)) -> tuple[tf.Tensor, tuple, tf.Tensor]:  # fmt: skip
        query, key, value = (self._heads(t) for t in tf.split(self.c_attn(x, nk[0]), 3, axis=-1))
        if cache is not None:
            key, value = update_cache(cache[0], key, start), update_cache(cache[1], value, start)  # [B, H, T, D]
        if cache is not None and x.shape[1] == 1:  # a decode step under XLA: the C++ kernel over the cache
            out = kernels.attend_cached(query[:, :, 0], key, value, bias[:, 0, 0] == 0, self.scale)  # [B, H, D]
            if out is not None:
                out = tf.reshape(out, [-1, 1, self.num_heads * self.head_dim])
                return self.c_proj(out, nk[1]), (key, value), None
        scores = tf.matmul(query, key, transpose_b=True) * self.scale + bias  # [B, H, S, T]
        probs = tf.nn.softmax(scores, axis=-1)
        out = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])  # [B, S, H, D]
        out = tf.reshape(out, [tf.shape(x)[0], tf.shape(x)[1], self.num_heads * self.head_dim])
        return self.c_proj(out, nk[1]), (key, value), probs


class TFGPT2MLP(tf_keras.layers.Layer):
    def __init__(self, inner: int, config: GPT2Config, scope: str) -> None:
        super().__init__(name="mlp")
        self.c_fc = TFConv1D(inner, config.n_embd, f"{scope}/c_fc", config.initializer_range)
        self.c_proj = TFConv1D(config.n_embd, inner, f"{scope}/c_proj", config.initializer_range)
        self.act = get_activation(config.activation_function)

    def call(self, x: tf.Tensor, nk: tuple = (None, None)) -> tf.Tensor:
        return self.c_proj(self.act(self.c_fc(x, nk[0])), nk[1])


class TFGPT2Block(tf_keras.layers.Layer):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int, scope: str) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1])
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = TFLayerNorm(config.n_embd, config.layer_norm_epsilon, f"{scope}/ln_1")
        self.attn = TFGPT2Attention(config, layer_idx, f"{scope}/attn")
        self.ln_2 = TFLayerNorm(config.n_embd, config.layer_norm_epsilon, f"{scope}/ln_2")
        self.mlp = TFGPT2MLP(inner, config, f"{scope}/mlp")

    def call(self, x: tf.Tensor, bias: tf.Tensor, cache: tuple | None, start: Any,
             nk: tuple = (None,) * 4) -> tuple[tf.Tensor, tuple, tf.Tensor]:  # fmt: skip
        """`nk`: the block's Conv1D weights as `[out, in]` copies (attn c_attn, c_proj, mlp c_fc, c_proj) for
        the decode step's C++ products, or Nones."""
        attn_out, kv, probs = self.attn(self.ln_1(x), bias, cache, start, nk[:2])
        x = x + attn_out
        return x + self.mlp(self.ln_2(x), nk[2:]), kv, probs

    def nk_weights(self) -> tuple:
        return tuple(tf.transpose(c.weight) for c in (self.attn.c_attn, self.attn.c_proj, self.mlp.c_fc, self.mlp.c_proj))


class TFGPT2MainLayer(tf_keras.layers.Layer):
    """Token + learned position embeddings, `n_layer` blocks, final LayerNorm (scope `transformer`)."""

    def __init__(self, config: GPT2Config, name: str = "transformer") -> None:
        super().__init__(name=name)
        self.config = config
        std = config.initializer_range
        self.wte = TFEmbedding(config.vocab_size, config.n_embd, f"{name}/wte", std)
        self.wpe = TFEmbedding(config.n_positions, config.n_embd, f"{name}/wpe", std)
        self.h = [TFGPT2Block(config, i, f"{name}/h_._{i}") for i in range(config.n_layer)]
        self.ln_f = TFLayerNorm(config.n_embd, config.layer_norm_epsilon, f"{name}/ln_f")

    def get_input_embeddings(self) -> TFEmbedding:
        return self.wte

    def set_input_embeddings(self, value: TFEmbedding) -> None:
        self.wte = value

    def _prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        raise NotImplementedError("GPT-2 head pruning is not implemented for TF (transformers 4.57 neither).")

    def run(self, input_ids: tf.Tensor, mask: tf.Tensor, positions: tf.Tensor, caches: list | None, start: Any,
            inputs_embeds: tf.Tensor | None = None, collect: bool = False, nk: list | None = None) -> tuple:  # fmt: skip
        """Blocks over `input_ids` `[B, S]` at cache offset `start`; `mask` `[B, T]` covers every key; `nk`:
        per block, `TFGPT2Block.nk_weights()` (decode steps under XLA)."""
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.wpe(positions)  # [B, S, E]
        bias = attention_bias(mask, start, tf.shape(x)[1])
        new_caches, hidden, attentions = [], [], []
        for i, block in enumerate(self.h):
            if collect:
                hidden.append(x)
            x, kv, probs = block(x, bias, None if caches is None else caches[i], start, *([nk[i]] if nk else []))
            new_caches.append(kv)
            attentions.append(probs)
        x = self.ln_f(x)
        if collect:
            hidden.append(x)
        return x, new_caches, tuple(hidden), tuple(attentions)

    def call(self, input_ids: tf.Tensor | None = None, attention_mask: tf.Tensor | None = None,
             position_ids: tf.Tensor | None = None, inputs_embeds: tf.Tensor | None = None,
             output_attentions: bool = False, output_hidden_states: bool = False, training: bool = False,
             **unused: Any) -> TFBaseModelOutputWithPast:  # fmt: skip
        if unused.get("past_key_values") is not None:
            raise NotImplementedError("past_key_values in the TF forward are not supported; generate() keeps its own cache.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        shape = tf.shape(input_ids if input_ids is not None else inputs_embeds)[:2]
        mask = tf.ones(shape, tf.int32) if attention_mask is None else tf.cast(attention_mask, tf.int32)
        if position_ids is None:
            position_ids = tf.broadcast_to(tf.range(shape[1])[None], shape)
        x, _, hidden, attentions = self.run(input_ids, mask, position_ids, None, 0, inputs_embeds,
                                            collect=output_hidden_states)  # fmt: skip
        return TFBaseModelOutputWithPast(last_hidden_state=x, hidden_states=hidden if output_hidden_states else None,
                                         attentions=attentions if output_attentions else None)  # fmt: skip


class TFGPT2PreTrainedModel(TFPreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    _tf_convert = convert
    _keys_to_ignore_on_load_unexpected = [r"h_\._\d+/attn/bias", r"lm_head"]


class TFGPT2Model(TFGPT2PreTrainedModel):
    """The bare GPT-2 stack (transformers' `TFGPT2Model`)."""

    def __init__(self, config: GPT2Config, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.transformer = TFGPT2MainLayer(config, name="transformer")

    def call(self, input_ids: tf.Tensor | None = None, **kwargs: Any) -> TFBaseModelOutputWithPast:
        kwargs.pop("return_dict", None)
        return self.transformer(input_ids, **kwargs)

    @classmethod
    def can_generate(cls) -> bool:
        return False


class TFGPT2LMHeadModel(TFGPT2PreTrainedModel):
    """GPT-2 with the tied LM head (transformers' `TFGPT2LMHeadModel`); `generate()` runs on the engine.

    Example:
        >>> model = TFGPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4))
        >>> model.generate(tf.constant([[1, 2, 3]]), max_new_tokens=5)
    """

    def __init__(self, config: GPT2Config, *inputs: Any, **kwargs: Any) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.transformer = TFGPT2MainLayer(config, name="transformer")

    def get_output_embeddings(self) -> TFEmbedding:
        return self.get_input_embeddings()

    def set_output_embeddings(self, value: TFEmbedding) -> None:
        self.set_input_embeddings(value)

    def call(self, input_ids: tf.Tensor | None = None, attention_mask: tf.Tensor | None = None,
             position_ids: tf.Tensor | None = None, inputs_embeds: tf.Tensor | None = None,
             labels: tf.Tensor | None = None, output_attentions: bool = False, output_hidden_states: bool = False,
             return_dict: bool | None = None, training: bool = False, **kwargs: Any) -> TFCausalLMOutputWithPast:  # fmt: skip
        out = self.transformer(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, **kwargs)  # fmt: skip
        logits = self.transformer.wte.attend(out.last_hidden_state)  # [B, S, V]
        loss = None
        if labels is not None:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 1:], logits[:, :-1]))
        return TFCausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)  # fmt: skip

    # -- engine-facing ---------------------------------------------------------------------------------
    def tf_prefill(self, input_ids: tf.Tensor, mask: tf.Tensor, max_length: int) -> tuple[tf.Tensor, dict]:
        """Run the prompt `[B, S]` with `mask` `[B, max_length]` (prompt mask, then ones) into a fresh cache."""
        batch, seq = tf.shape(input_ids)[0], input_ids.shape[1]
        cfg = self.config
        shape = [batch, cfg.n_head, max_length, cfg.n_embd // cfg.n_head]
        caches = [(tf.zeros(shape), tf.zeros(shape)) for _ in range(cfg.n_layer)]
        positions = left_pad_positions(mask)[:, :seq]
        x, caches, _, _ = self.transformer.run(input_ids, mask, positions, caches, 0)
        state = {"caches": caches, "mask": mask}
        if input_ids.shape[0] != 1 and kernels.decode_on_cpp():
            # Decode steps multiply B rows by every weight: the C++ product (backends/tf/kernels.py) reads
            # weights `[out, in]`, so the Conv1D weights are transposed once per call; the head is the table.
            # One row: the layers give the C++ product their `[in, out]` weights as they are (one_row_on_cpp),
            # which streams them as fast at batch 1; the copies would cost ~140 ms a call.
            state["nk"] = [block.nk_weights() for block in self.transformer.h]
        elif input_ids.shape[0] != 1:  # [E, V] once per call (TFEmbedding.attend); one row: the copy costs more
            state["head"] = self.transformer.wte.head_kernel()
        return self._logits(x[:, -1], state), state  # [B, V]

    def tf_decode(self, state: dict, tokens: tf.Tensor, cur: Any) -> tuple[tf.Tensor, dict]:
        """One step: `tokens` `[B]` sit at position `cur - 1`; returns the next logits `[B, V]`."""
        mask = state["mask"]
        start = tf.cast(cur, tf.int32) - 1
        positions = tf.gather(left_pad_positions(mask), [start], axis=1)  # [B, 1]
        x, caches, _, _ = self.transformer.run(tf.cast(tokens, tf.int32)[:, None], mask, positions, state["caches"],
                                               start, nk=state.get("nk"))  # fmt: skip
        return self._logits(x[:, -1], state), {**state, "caches": caches}

    def tf_screen_head(self, state: dict, top_logits: Any) -> dict:
        """The state for decode steps that need only each row's `top_logits` largest logits: the int8 screen of
        the tied head, built now (kernels.top_logits_screen), or `state` unchanged where it cannot run."""
        screen = kernels.top_logits_screen(self.transformer.wte.embeddings)
        return state if screen is None else {**state, "screen": screen, "top_logits": top_logits}

    def _logits(self, x: tf.Tensor, state: dict) -> tf.Tensor:
        """The tied head over the last hidden states `[B, E]` -> `[B, V]` (only the top ones with a screen)."""
        if "screen" in state:
            return kernels.top_logits(x, state["screen"], self.transformer.wte.embeddings, state["top_logits"])
        if "nk" in state:
            return kernels.linear(x, self.transformer.wte.embeddings)
        return self.transformer.wte.attend(x, state.get("head"))

    def tf_reorder(self, state: dict, index: tf.Tensor) -> dict:
        """Beam search: row i continues old row `index[i]`."""
        caches = [(tf.gather(k, index), tf.gather(v, index)) for k, v in state["caches"]]
        return {**state, "caches": caches, "mask": tf.gather(state["mask"], index)}

