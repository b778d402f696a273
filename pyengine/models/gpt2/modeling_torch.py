"""GPT-2 in PyTorch, parameter for parameter transformers' `GPT2Model` / `GPT2LMHeadModel`.

Read top to bottom: Conv1D → attention → MLP → block → model → LM head. Parameter names and layouts match
transformers (Conv1D weights are `[in, out]`), so checkpoints load in either library unchanged.

Engine contract (both classes): `forward(...)` HF-style, plus `num_layers`, `num_kv_heads`, `head_dim` and
`new_cache(batch_size, max_length)`, a `KVCache` preallocated in the model's dtype and device. A forward
of `S` tokens writes cache positions `[past, past + S)` and advances the cache once.

Shapes: `B` batch, `S` new tokens, `T` past + new tokens, `H` heads, `D` head dim, `E` hidden, `V` vocab.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pyengine.backends.torch import decode
from pyengine.backends.torch.attention import as_kv_cache, attention, build_attention_mask
from pyengine.backends.torch.cache import KVCache
from pyengine.backends.torch.functional import causal_lm_loss, get_activation
from pyengine.generation.utils import GenerationMixin
from pyengine.modeling_outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
)
from pyengine.modeling_utils import PreTrainedModel
from pyengine.models.gpt2 import convert
from pyengine.models.gpt2.config import GPT2Config


class Conv1D(nn.Module):
    """GPT-2's linear layer with the weight stored `[in, out]` (the original TF layout)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.shape[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)  # same kernel as transformers
        return x.view(size_out)


class GPT2Attention(nn.Module):
    """Causal self-attention with a fused QKV projection (`c_attn`) and output projection (`c_proj`)."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.embed_dim = config.n_embd
        self.num_heads = config.n_head
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"`n_embd` ({self.embed_dim}) must be divisible by `n_head` ({self.num_heads}).")
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq = hidden_states.shape[:2]
        query, key, value = self.c_attn(hidden_states).split(self.embed_dim, dim=2)  # [B, S, E] each
        query, key, value = (x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
                             for x in (query, key, value))  # [B, H, S, D]  # fmt: skip
        if cache is not None and hasattr(cache, "attend"):  # the cache attends itself (batch engine's paged view)
            out = cache.attend(self.layer_idx, query, key, value, self.scale).transpose(1, 2)  # [B, S, H, D]
            return self.resid_dropout(self.c_proj(out.reshape(batch, seq, self.embed_dim))), None
        if cache is not None:
            key, value = cache.update(self.layer_idx, key, value)  # [B, H, T, D]
        eager = output_attentions or self.config._attn_implementation == "eager"
        dropout_p = self.attn_dropout.p if self.training else 0.0
        out, probs = attention(query, key, value, mask, is_causal, self.scale, dropout_p, eager)  # [B, S, H, D]
        out = self.c_proj(out.reshape(batch, seq, self.embed_dim))
        return self.resid_dropout(out), probs


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, intermediate_size)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(inner_dim, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, probs = self.attn(self.ln_1(hidden_states), mask, is_causal, cache, output_attentions)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, probs


class GPT2PreTrainedModel(PreTrainedModel):
    """Loading rules and weight init shared by the GPT-2 classes."""

    config_class = GPT2Config
    base_model_prefix = "transformer"
    # Old checkpoints carry the causal-mask buffers; transformers 4.57 drops them silently too.
    _keys_to_ignore_on_load_unexpected = [r"\.attn\.bias$", r"\.attn\.masked_bias$"]

    @classmethod
    def _convert_state_dict(cls, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return convert.from_pt(arrays)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' GPT-2 init, including the 1/sqrt(2 * n_layer) scaling of residual projections."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
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
        for name, param in module.named_parameters():
            if name == "c_proj.weight":  # GPT-2 paper: scale residual layers by 1/sqrt(N), 2 per block
                param.data.normal_(mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))

    # -- engine-facing -----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.config.n_layer

    @property
    def num_kv_heads(self) -> int:
        return self.config.n_head

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.config.n_head

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty KV cache for `batch_size` rows and `max_length` tokens, in this model's dtype and device."""
        return KVCache(self.num_layers, batch_size, self.num_kv_heads, self.head_dim, max_length,
                       dtype=self.dtype, device=self.device)  # fmt: skip


class GPT2Model(GPT2PreTrainedModel):
    """Token + learned position embeddings, `n_layer` blocks, final LayerNorm."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        if config.add_cross_attention:
            raise NotImplementedError("GPT-2 cross-attention (add_cross_attention=True) is not supported.")
        self.embed_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.wte = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: KVCache | tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        cache_position: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple[Any, ...]:
        """Run the stack over `S` new tokens (argument order as transformers' `GPT2Model.forward`).

        Args:
            input_ids: `[B, S]` token ids (or `inputs_embeds` `[B, S, E]`).
            past_key_values: None, a `KVCache`, or transformers' legacy tuple of `(k, v)` `[B, H, T, D]`.
            cache_position: absolute positions of the new tokens `[S]`; default `past .. past + S - 1`.
            attention_mask: `[B, T]` with 1 for real tokens, 0 for padding (past + new positions).
            token_type_ids: `[B, S]`, embedded with `wte` and added (GPT-2's convention).
            position_ids: `[B, S]`; default `cache_position` (generate passes positions from the mask).
            use_cache: return the cache (created, growing, when none is given); default `config.use_cache`.
            output_attentions, output_hidden_states, return_dict: as in transformers.
        """
        if head_mask is not None or encoder_hidden_states is not None:
            raise NotImplementedError("head_mask and encoder_hidden_states are not supported by pyengine's GPT-2.")
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = cfg.use_cache if use_cache is None else use_cache
        return_dict = cfg.use_return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids.view(-1, input_ids.shape[-1]))  # [B, S, E]
        batch, seq = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        cache = as_kv_cache(past_key_values)
        if cache is None and use_cache:
            cache = self.new_cache(batch, seq)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if cache_position is None:
                cache_position = torch.arange(past, past + seq, device=device)
            position_ids = cache_position.unsqueeze(0)  # [1, S]
        hidden_states = inputs_embeds + self.wpe(position_ids).to(device)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids.view(-1, seq))
        hidden_states = self.drop(hidden_states)
        mask, is_causal = build_attention_mask(attention_mask, past, seq, device)

        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        all_attn: tuple[torch.Tensor, ...] | None = () if output_attentions else None
        for block in self.h:
            if all_hidden is not None:
                all_hidden += (hidden_states,)
            hidden_states, probs = block(hidden_states, mask, is_causal, cache, output_attentions)
            if all_attn is not None:
                all_attn += (probs,)
        hidden_states = self.ln_f(hidden_states)
        if all_hidden is not None:
            all_hidden += (hidden_states,)
        if cache is not None:
            cache.advance(seq)

        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            past_key_values=cache if use_cache else None,
            hidden_states=all_hidden,
            attentions=all_attn,
        )
        return out if return_dict else out.to_tuple()


class GPT2DecodePath:
    """The decode-only forward of `GPT2LMHeadModel`: one new token per row (pyengine/backends/torch/decode.py).

    Built once per model and weights dtype; the float32 Conv1D weights are used in place in their `[in, out]`
    layout (bf16 / int8 copies are made `[out, in]` here), activation buffers are reused across steps. Per
    block: LayerNorm → c_attn → decode_attention (cache write, attention over the cache) → c_proj added
    into the residual in place → LayerNorm → c_fc → GELU in place → mlp.c_proj added in place; with a
    KVCache, the tanh GELU and our kernel for every product, all blocks are one `decode_layers` call.
    Logits equal the reference forward's within the float32 tolerance.
    """

    def __init__(self, model: GPT2LMHeadModel, weights_dtype: str) -> None:
        cfg, t = model.config, model.transformer
        self.weights_dtype = weights_dtype
        self.source = self.fingerprint(model)
        self.num_heads, self.dim, self.eps = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.layer_norm_epsilon
        self.act_name = cfg.activation_function
        self.act = get_activation(cfg.activation_function)

        def conv(module: Conv1D) -> decode.Linear:
            return decode.Linear([module.weight], [module.bias], weight_kn=True, weights_dtype=weights_dtype)

        self.blocks = [
            (block.ln_1, conv(block.attn.c_attn), conv(block.attn.c_proj), block.ln_2, conv(block.mlp.c_fc),
             conv(block.mlp.c_proj), block.attn.scale)
            for block in t.h
        ]  # fmt: skip
        self.ln_f, self.wte, self.wpe = t.ln_f, t.wte.weight.detach(), t.wpe.weight.detach()
        self.inner = self.blocks[0][4].out_features
        self.lm_head = decode.Head(model.lm_head.weight, weights_dtype=weights_dtype)
        self.workspace = decode.Workspace()
        decode.place_on_hugepages([p for block in self.blocks for p in block if isinstance(p, decode.Linear)]
                                  + [self.lm_head])  # fmt: skip
        # decode_layers computes the tanh GELU itself; another activation takes the op-by-op path.
        self.fused_layers = self.act_name in ("gelu_new", "gelu_pytorch_tanh")
        ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj, scales = zip(*self.blocks)
        self.stack = dict(
            norm_in=[n.weight.detach() for n in ln_1], norm_post=[n.weight.detach() for n in ln_2],
            norm_in_bias=[n.bias.detach() for n in ln_1], norm_post_bias=[n.bias.detach() for n in ln_2],
            projections=[decode.stack_projections(p) for p in (c_attn, c_proj, c_fc, mlp_proj)], scale=list(scales),
        )  # fmt: skip

    @staticmethod
    def fingerprint(model: GPT2LMHeadModel) -> tuple[int, ...]:
        """Where the weights live: a change (`.to()`, new parameters) rebuilds the path."""
        t = model.transformer
        return (t.wte.weight.data_ptr(), model.lm_head.weight.data_ptr(), t.h[0].attn.c_attn.weight.data_ptr(),
                t.h[-1].mlp.c_proj.weight.data_ptr())  # fmt: skip

    def _gelu_(self, x: torch.Tensor) -> None:
        if self.act_name in ("gelu_new", "gelu_pytorch_tanh"):  # the same tanh formula, in one pass
            torch._C._nn.gelu_(x, approximate="tanh")
        else:
            x.copy_(self.act(x))

    def step(self, input_ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None,
             position_ids: torch.Tensor | None, top_logits: int | None = None) -> torch.Tensor:  # fmt: skip
        """Logits `[B, 1, V]` (float32) for one token per row `input_ids [B, 1]`; the cache advances by one.
        `top_logits=k`: only each row's k largest, -inf elsewhere (`decode.Head`)."""
        ops = decode._kernels()
        batch, past = input_ids.shape[0], cache.get_seq_length()
        H, D, E = self.num_heads, self.dim, self.wte.shape[1]
        if position_ids is None:
            positions = torch.full((batch,), past, dtype=torch.long)
        else:
            positions = position_ids.reshape(-1).to(torch.long).expand(batch)  # [B]
        delegated = type(cache) is not KVCache  # a cache with attend(): the batch engine's paged view
        key_mask = rows = None
        if not delegated:
            if past + 1 > cache.capacity:
                cache._grow(past + 1)
            key_mask = decode.key_mask_for(attention_mask, past + 1)  # [B, T]
            rows = cache.rows_for_decode()  # beams: where each row's positions live (KVCache.reorder)
        ws = self.workspace
        h, qkv, attn, ff = (ws.get("h", batch, E), ws.get("qkv", batch, 3 * E), ws.get("attn", batch, E),
                            ws.get("ff", batch, self.inner))  # fmt: skip
        x = self.wte.index_select(0, input_ids.reshape(-1)).add_(self.wpe.index_select(0, positions))  # [B, E]
        # One C++ call for all blocks when their products run our kernel (they share weights dtype and rows),
        # over a KVCache or the batch engine's blocks.
        layout = decode.fused_layout(cache, delegated)
        if layout is not None and self.fused_layers and self.blocks[0][1].uses_kernel(batch):
            st, (keys, values, paged) = self.stack, layout
            ops.decode_layers(x, h, qkv, attn, ff, st["norm_in"], st["norm_post"], self.eps, *st["projections"],
                              keys, values, None, None, positions.contiguous(), past, key_mask, H, st["scale"], rows,
                              norm_in_bias=st["norm_in_bias"], norm_post_bias=st["norm_post_bias"],
                              activation="gelu_tanh", weight_kn=self.blocks[0][1].kn, paged=paged)  # fmt: skip
            return self._head(x, h, cache, batch, top_logits)
        for i, (ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj, scale) in enumerate(self.blocks):
            ops.layer_norm_into(h, x, ln_1.weight, ln_1.bias, self.eps)
            c_attn(qkv, h)
            if delegated:
                decode.attend_delegated(cache, i, qkv, H, H, D, None, scale, attn)
            else:
                ops.decode_attention(attn, qkv, cache.keys[i], cache.values[i], None, None, positions, past,
                                     key_mask, H, scale, rows)  # fmt: skip
            c_proj(x, attn, accumulate=True)
            ops.layer_norm_into(h, x, ln_2.weight, ln_2.bias, self.eps)
            c_fc(ff, h)
            self._gelu_(ff)
            mlp_proj(x, ff, accumulate=True)
        return self._head(x, h, cache, batch, top_logits)

    def _head(self, x: torch.Tensor, h: torch.Tensor, cache: Any, batch: int, top_logits: int | None) -> torch.Tensor:
        """Final LayerNorm and the LM head: logits `[B, 1, V]`; the cache advances by one."""
        decode._kernels().layer_norm_into(h, x, self.ln_f.weight, self.ln_f.bias, self.eps)
        logits = torch.empty(batch, self.lm_head.out_features)  # fresh: callers may keep it
        self.lm_head(logits, h, top_logits=top_logits)
        cache.advance(1)
        return logits.view(batch, 1, -1)


class GPT2LMHeadModel(GPT2PreTrainedModel, decode.DecodePathMixin, GenerationMixin):
    """GPT-2 with a language-modeling head whose weight is tied to `transformer.wte`.

    Decoding one token per row with a KVCache runs `GPT2DecodePath` (C++ kernels, reused buffers) unless
    `model.decode_path_enabled = False`; `model.quantize("bf16" | "int8")` makes it read lower-precision
    weight copies (see `DecodePathMixin.quantize`). Every other call runs the reference forward below.
    """

    _tied_weights_keys = ["lm_head.weight"]
    _decode_path_class = GPT2DecodePath

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: KVCache | tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
        cache_position: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        *,
        top_logits: int | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithCrossAttentions | tuple[Any, ...]:
        """`GPT2Model.forward` plus the head: logits `[B, S_kept, V]` in the model dtype.

        Args:
            labels: `[B, S]` next-token targets (shifted inside; -100 ignored) → `loss`.
            logits_to_keep: 0 keeps all positions; N keeps the last N; a tensor selects positions.
            top_logits: (pyengine) on the decode path, compute only each row's `top_logits` largest logits (ties
                included) and leave -inf elsewhere (`decode.Head`); generate() passes it when its decoding rule
                depends on those alone. None: every logit.
            (others): see `GPT2Model.forward`.
        """
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        decode.check_top_logits(top_logits)
        cache = decode.decode_cache(self, input_ids, past_key_values, inputs_embeds, labels, use_cache,
                                    output_attentions, output_hidden_states, logits_to_keep)  # fmt: skip
        if token_type_ids is not None or head_mask is not None or encoder_hidden_states is not None:
            cache = None
        if cache is not None:  # one token per row: the decode path
            logits = self.decode_path().step(input_ids, cache, attention_mask, position_ids, top_logits)
            out = CausalLMOutputWithCrossAttentions(logits=logits, past_key_values=cache)
            return out if return_dict else out.to_tuple()
        outputs = self.transformer(
            input_ids, past_key_values=past_key_values, cache_position=cache_position, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )  # fmt: skip
        hidden_states = outputs.last_hidden_state  # [B, S, E]
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept, :])  # [B, S_kept, V]
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        out = CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()
