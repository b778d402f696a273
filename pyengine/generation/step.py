"""CausalLMStep: the model's part of the decoding loop for PyTorch causal LMs.

It turns the token history into next-token logits through a KV cache preallocated for `max_length`,
and keeps what `return_dict_in_generate` asks for (attentions, hidden states). Beam strategies call
`reorder` after each step.
"""

from __future__ import annotations

from typing import Any

import torch

from pyengine.backends.torch.cache import KVCache
from pyengine.generation_config import GenerationConfig


class CausalLMStep:
    """The model's part of the loop: token history `[B, cur]` -> next-token logits `[B, V]` (float32).

    With `use_cache` the first call runs the prompt, later calls only the newest token, reading and
    writing a KV cache preallocated for `max_length`. The attention mask lives in a preallocated
    `[B, max_length]` buffer; position ids follow transformers: `cumsum(mask) - 1`, pads at 1.
    """

    fresh_logits = True  # each call returns a new float32 copy: the engine's processors may write into it

    def __init__(self, model: Any, attention_mask: torch.Tensor, config: GenerationConfig, model_kwargs: dict,
                 group: int = 1, top_logits: int | None = None) -> None:  # fmt: skip
        """`group`: rows come in runs of `group` identical prompts (beams, return sequences): the prompt then
        runs once per run and its keys/values are shared (`KVCache.fill_from_groups`)."""
        self.model = model
        self.group = group
        batch, prompt_len = attention_mask.shape
        self.mask = attention_mask.new_ones((batch, config.max_length))  # [B, T]
        self.mask[:, :prompt_len] = attention_mask
        self.use_cache = bool(config.use_cache if model_kwargs.get("use_cache") is None else model_kwargs["use_cache"])
        self.cache = model.new_cache(batch, config.max_length) if self.use_cache else None
        self.output_attentions = bool(config.output_attentions and config.return_dict_in_generate)
        self.output_hidden_states = bool(config.output_hidden_states and config.return_dict_in_generate)
        self.attentions: list[Any] = []
        self.hidden_states: list[Any] = []
        self.done = 0  # positions already in the cache
        self.top_logits = top_logits if takes_top_logits(model) else None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        cur = tokens.shape[1]
        mask = self.mask[:, :cur]  # [B, cur]
        positions = mask.long().cumsum(-1) - 1
        positions.masked_fill_(mask == 0, 1)
        start = self.done if self.use_cache else 0
        if start == 0 and self._shares_prompt(tokens):
            return self._shared_prefill(tokens, mask, positions)
        inputs = self.model.prepare_inputs_for_generation(
            tokens[:, start:],
            attention_mask=mask,
            position_ids=positions[:, start:],
            past_key_values=self.cache,
            use_cache=self.use_cache,
            output_attentions=self.output_attentions,
            output_hidden_states=self.output_hidden_states,
            logits_to_keep=1,
        )
        if self.top_logits is not None:
            inputs["top_logits"] = self.top_logits
        out = self.model(**inputs, return_dict=True)
        self.done = cur
        if self.output_attentions:
            self.attentions.append(out.attentions)
        if self.output_hidden_states:
            self.hidden_states.append(out.hidden_states)
        logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        return self.model.adjust_logits_during_generation(logits, cur_len=cur)

    def _shares_prompt(self, tokens: torch.Tensor) -> bool:
        g = self.group
        if g <= 1 or not self.use_cache or type(self.cache) is not KVCache or tokens.shape[0] % g:
            return False
        if self.output_attentions or self.output_hidden_states:
            return False  # per-row outputs of the prompt pass are asked for
        if getattr(self.model.config, "pruned_heads", None):
            return False  # layers with different head counts: the cache is laid out by the reference forward
        from pyengine.generation.utils import GenerationMixin  # utils imports this module

        # A model that overrides the input hook must see every row's call.
        return type(self.model).prepare_inputs_for_generation is GenerationMixin.prepare_inputs_for_generation

    def _shared_prefill(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The prompt pass over one row of each group; the group's rows then share its keys/values."""
        g, cur = self.group, tokens.shape[1]
        prompt_cache = self.model.new_cache(tokens.shape[0] // g, self.cache.capacity)
        out = self.model(input_ids=tokens[::g], attention_mask=mask[::g], position_ids=positions[::g],
                         past_key_values=prompt_cache, use_cache=True, return_dict=True, logits_to_keep=1)  # fmt: skip
        self.cache.fill_from_groups(prompt_cache, g)
        self.done = cur
        logits = out.logits[:, -1, :].to(dtype=torch.float32).repeat_interleave(g, 0)  # a fresh tensor
        return self.model.adjust_logits_during_generation(logits, cur_len=cur)

    def idle(self, tokens: torch.Tensor) -> None:
        """synced_gpus: run the model once on the last token without touching the cache or the outputs."""
        self.model(input_ids=tokens[:, -1:], use_cache=False, return_dict=True, logits_to_keep=1)

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i continues old row index[i]."""
        if self.cache is not None:
            self.cache.reorder(index)


def takes_top_logits(model: Any) -> bool:
    """Whether `model.forward` takes `top_logits` (the decode path's screened head) and nothing after the
    forward moves a logit: a model's own `adjust_logits_during_generation` could lift one from below the top."""
    from pyengine.generation.utils import GenerationMixin  # utils imports this module

    hook = type(model).adjust_logits_during_generation
    return getattr(model, "accepts_top_logits", False) and hook is GenerationMixin.adjust_logits_during_generation


class Seq2SeqStep:
    """Encoder-decoder models: decoder history `[B, cur]` -> next-token logits `[B, V]` (float32).

    The encoder ran once (`encoder_outputs`, already expanded for beams / return sequences); each step
    feeds the new decoder tokens with the encoder mask, through a preallocated decoder cache whose
    cross-attention keys/values are computed on the first step and reused.
    """

    fresh_logits = True  # each call returns a new float32 copy: the engine's processors may write into it

    def __init__(self, model: Any, encoder_outputs: Any, encoder_mask: torch.Tensor | None, config: GenerationConfig,
                 model_kwargs: dict) -> None:
        self.model = model
        self.encoder_outputs = encoder_outputs
        self.encoder_mask = encoder_mask
        batch = encoder_outputs.last_hidden_state.shape[0]
        self.use_cache = bool(config.use_cache if model_kwargs.get("use_cache") is None else model_kwargs["use_cache"])
        self.cache = model.new_cache(batch, config.max_length) if self.use_cache else None
        self.output_attentions = bool(config.output_attentions and config.return_dict_in_generate)
        self.output_hidden_states = bool(config.output_hidden_states and config.return_dict_in_generate)
        self.attentions: list[Any] = []
        self.cross_attentions: list[Any] = []
        self.hidden_states: list[Any] = []
        self.done = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        start = self.done if self.use_cache else 0
        inputs = self.model.prepare_inputs_for_generation(
            tokens[:, start:],
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.encoder_mask,
            past_key_values=self.cache,
            use_cache=self.use_cache,
            output_attentions=self.output_attentions,
            output_hidden_states=self.output_hidden_states,
        )
        out = self.model(**inputs, return_dict=True)
        if self.use_cache:
            self.cache = out.past_key_values
        self.done = tokens.shape[1]
        if self.output_attentions:
            self.attentions.append(out.decoder_attentions)
            self.cross_attentions.append(out.cross_attentions)
        if self.output_hidden_states:
            self.hidden_states.append(out.decoder_hidden_states)
        logits = out.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        return self.model.adjust_logits_during_generation(logits, cur_len=tokens.shape[1])

    def idle(self, tokens: torch.Tensor) -> None:
        """synced_gpus: one decoder forward on the last token, no cache, nothing recorded."""
        self.model(encoder_outputs=self.encoder_outputs, attention_mask=self.encoder_mask,
                   decoder_input_ids=tokens[:, -1:], use_cache=False, return_dict=True)

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i continues old row index[i]; the encoder outputs are shared within a batch item."""
        if self.cache is not None:
            self.cache.reorder(index)

