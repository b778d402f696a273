"""GenerationMixin: transformers' `generate()` for PyTorch models, running on the shared engine.

This file owns the HF-compatible surface only: argument resolution (transformers 4.57's precedence and
checks), input preparation (attention mask inference, left padding, `num_return_sequences` expansion)
and output assembly. The decoding itself is `pyengine.engine.loop.run` with the torch backend; the
model's part is `CausalLMStep`, which turns the token history into next-token logits through the
preallocated KV cache.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pyengine.backends.torch.backend import TorchBackend
from pyengine.engine import loop
from pyengine.engine.beam_scorer import BeamSearchScorer
from pyengine.engine.beam_search import run_beam
from pyengine.engine.group_beam_search import run_group_beam
from pyengine.engine.outputs import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)
from pyengine.engine.plan import build_plan, fuse_sample
from pyengine.generation.logits_process import (
    EncoderNoRepeatNGramLogitsProcessor,
    EncoderRepetitionPenaltyLogitsProcessor,
    LogitsProcessorList,
    PrefixConstrainedLogitsProcessor,
    as_specs,
)
from pyengine.generation.step import CausalLMStep, Seq2SeqStep
from pyengine.generation.stopping_criteria import StoppingCriteriaList
from pyengine.generation.strategies import StrategyMethodsMixin
from pyengine.generation_config import GenerationConfig
from pyengine.modeling_outputs import BaseModelOutput

logger = logging.getLogger("pyengine")

# Model kwargs generate() understands for decoder-only models; anything else is a typo or unsupported.
_MODEL_KWARGS = {"attention_mask", "output_attentions", "output_hidden_states", "use_cache", "logits_to_keep", "seed"}
_SEQ2SEQ_KWARGS = {"encoder_outputs", "decoder_input_ids"}


@dataclass
class _Prepared:
    input_ids: torch.Tensor  # [B*n, S] prompt (decoder-only) or decoder start ids (encoder-decoder)
    attention_mask: torch.Tensor | None  # [B*n, S] prompt mask, or the encoder mask
    encoder_outputs: Any = None  # encoder-decoder: last_hidden_state expanded to [B*n, S_enc, D]


def _row_seeds(seed: int | list[int], batch: int, config: GenerationConfig) -> list[int]:
    """pyengine's `seed=` extension: one seed per prompt (an int seeds prompt i with seed + i); return
    sequence j of prompt i uses seed_i + 1_000_003 * j. A row's tokens then depend only on its seed."""
    if not config.do_sample or config.num_beams > 1:
        raise ValueError("`seed=` selects counter-based sampling: it needs do_sample=True and num_beams=1.")
    if config.output_scores and config.return_dict_in_generate:
        raise ValueError("`seed=` samples in one fused step and keeps no per-step scores; drop output_scores.")
    seeds = [int(seed) + i for i in range(batch)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"`seed` lists {len(seeds)} seeds for {batch} prompts; pass one per prompt or an int.")
    n = config.num_return_sequences
    return [s + 1_000_003 * j for s in seeds for j in range(n)]


def _all_processes_done(this_process_done: bool) -> bool:
    """synced_gpus: a sum all-reduce of "still running" flags across the default process group."""
    import torch.distributed as dist

    flag = torch.tensor(0.0 if this_process_done else 1.0)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return flag.item() == 0.0


class GenerationMixin(StrategyMethodsMixin):
    """Adds `generate()` to a PyTorch causal LM (transformers 4.57 semantics).

    Supported here: greedy and multinomial sampling with every processor in `pyengine.engine.plan`,
    EOS/pad handling, left-padded batches, `num_return_sequences`, `return_dict_in_generate` with
    scores, logits, attentions and hidden states. Beam strategies arrive with the generation-API issue.
    """

    def can_generate(self) -> bool:
        return True

    # -- model hooks (override in a subclass to customise generation, as in transformers) ----------------
    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        """The forward keyword arguments for one decoding step; `input_ids` holds only the new tokens.

        Decoder-only: `input_ids`, `attention_mask` `[B, cur]`, `position_ids`, `past_key_values`, ... .
        Encoder-decoder: the new tokens become `decoder_input_ids` next to `encoder_outputs`.
        """
        if self.config.is_encoder_decoder:
            return {"decoder_input_ids": input_ids, **kwargs}
        return {"input_ids": input_ids, **kwargs}

    def adjust_logits_during_generation(self, logits: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        """Hook on the raw next-token logits `[B, V]` before any processor (identity by default)."""
        return logits

    def _prepare_generation_config(
        self, generation_config: GenerationConfig | None, use_model_defaults: bool | None, **kwargs: Any
    ) -> tuple[GenerationConfig, dict[str, Any]]:
        model_config = getattr(self, "generation_config", None) or GenerationConfig.from_model_config(self.config)
        if generation_config is None:
            generation_config = model_config
        elif use_model_defaults is not False:
            # transformers >= 4.50: values left at the global default fall back to the model's own defaults.
            generation_config = copy.deepcopy(generation_config)
            global_default = GenerationConfig()
            for key, value in model_config.__dict__.items():
                if key.startswith("_") or key == "transformers_version":
                    continue
                if getattr(generation_config, key, None) == getattr(global_default, key, None) and value != getattr(
                    global_default, key, None
                ):
                    setattr(generation_config, key, value)
        generation_config = copy.deepcopy(generation_config)
        model_kwargs = generation_config.update(**kwargs)
        for flag in ("output_attentions", "output_hidden_states"):
            if getattr(generation_config, flag):
                model_kwargs[flag] = True
        return generation_config, model_kwargs

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        prefix_allowed_tokens_fn: Any = None,
        synced_gpus: bool | None = None,
        assistant_model: Any = None,
        streamer: Any = None,
        negative_prompt_ids: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        use_model_defaults: bool | None = None,
        **kwargs: Any,
    ) -> GenerateDecoderOnlyOutput | torch.LongTensor:
        """Generate token ids (transformers' `GenerationMixin.generate`).

        Args:
            inputs: prompt ids `[B, S]` (left-padded for batches); may also be passed as `input_ids=`.
            generation_config: base parameters; keyword arguments override its fields.
            logits_processor / stopping_criteria: extra user objects, applied after generate's own.
            streamer: an object with `put(tokens)` / `end()` (transformers' streamer protocol).
            **kwargs: GenerationConfig fields, or model kwargs such as `attention_mask`.

        Returns:
            `[B * num_return_sequences, T]` ids, or a `GenerateDecoderOnlyOutput` when
            `return_dict_in_generate=True`.

        Example:
            >>> out = model.generate(input_ids, max_new_tokens=20, do_sample=True, top_p=0.9)
        """
        if "input_ids" in kwargs:
            if inputs is not None:
                raise ValueError("`inputs` and `input_ids` were both passed; pass the prompt once.")
            inputs = kwargs.pop("input_ids")
        explicit_max_length = kwargs.get("max_length") is not None
        explicit_min_length = kwargs.get("min_length") is not None
        config, model_kwargs = self._prepare_generation_config(generation_config, use_model_defaults, **kwargs)
        self._check_supported(config, model_kwargs, prefix_allowed_tokens_fn, assistant_model)

        inputs = self._prepare_input_ids(inputs, config, model_kwargs)
        eos_ids, pad_id = self._prepare_special_tokens(config, model_kwargs.get("attention_mask") is not None)
        prepared = self._prepare_model_inputs(inputs, config, model_kwargs, eos_ids, pad_id)
        input_ids = prepared.input_ids
        self._check_pad_token(pad_id, eos_ids, config.num_beams, input_ids.shape[0])
        if streamer is not None:
            streamer.put(input_ids.cpu())
        self._prepare_lengths(config, input_ids.shape[1], explicit_max_length, explicit_min_length)
        plan = build_plan(
            config,
            vocab_size=self.config.vocab_size,
            prompt_length=input_ids.shape[1],
            eos_token_ids=eos_ids,
            pad_token_id=pad_id,
            num_beams=config.num_beams,
            custom_processors=as_specs(logits_processor),
            custom_criteria=_custom_criteria(stopping_criteria),
            framework_processors=_framework_processors(config, inputs, prefix_allowed_tokens_fn),
        )
        if synced_gpus:
            plan.sync = _all_processes_done
        if model_kwargs.get("seed") is not None:
            plan.fused_select = fuse_sample(plan, _row_seeds(model_kwargs["seed"], inputs.shape[0], config))
        step = self._make_step(prepared, config, model_kwargs, top_logits=plan.top_logits)
        backend = TorchBackend(input_ids.device)
        if config.num_beams > 1:
            with _explain_invalid_scores(config):
                return self._run_beam(config, plan, step, backend, input_ids)
        on_step = (lambda t: streamer.put(t.cpu())) if streamer is not None else None
        with _explain_invalid_scores(config):
            result = loop.run(plan, step, backend, input_ids, rng=None, on_step=on_step)
        if streamer is not None:
            streamer.end()
        if not config.return_dict_in_generate:
            return result.sequences
        return self._output(config, step, result, beam=False)

    def _make_step(self, prepared: _Prepared, config: GenerationConfig, model_kwargs: dict,
                   top_logits: int | None = None) -> Any:  # fmt: skip
        if self.config.is_encoder_decoder:
            return Seq2SeqStep(self, prepared.encoder_outputs, prepared.attention_mask, config, model_kwargs)
        group = max(config.num_beams, config.num_return_sequences)  # _prepare_model_inputs' expansion
        return CausalLMStep(self, prepared.attention_mask, config, model_kwargs, group=group, top_logits=top_logits)

    def _output(self, config: GenerationConfig, step: Any, result: Any, beam: bool) -> Any:
        """transformers' output class for this model type and strategy, with what was asked for."""
        extra: dict[str, Any] = {"sequences": result.sequences, "scores": result.scores, "logits": result.logits,
                                 "past_key_values": step.cache}
        if beam:
            extra["sequences_scores"] = result.sequences_scores if config.output_scores else None
            extra["beam_indices"] = result.beam_indices
        attentions = tuple(step.attentions) if config.output_attentions else None
        hidden = tuple(step.hidden_states) if config.output_hidden_states else None
        if not self.config.is_encoder_decoder:
            cls = GenerateBeamDecoderOnlyOutput if beam else GenerateDecoderOnlyOutput
            return cls(attentions=attentions, hidden_states=hidden, **extra)
        enc = step.encoder_outputs
        cls = GenerateBeamEncoderDecoderOutput if beam else GenerateEncoderDecoderOutput
        return cls(
            encoder_attentions=enc.get("attentions") if config.output_attentions else None,
            encoder_hidden_states=enc.get("hidden_states") if config.output_hidden_states else None,
            decoder_attentions=attentions,
            cross_attentions=tuple(step.cross_attentions) if config.output_attentions else None,
            decoder_hidden_states=hidden,
            **extra,
        )

    def _run_beam(
        self, config: GenerationConfig, plan: Any, step: Any, backend: TorchBackend, input_ids: torch.Tensor
    ) -> Any:
        if config.num_beam_groups > 1:
            scorer = BeamSearchScorer(
                backend, input_ids.shape[0] // config.num_beams, config.num_beams, config.length_penalty,
                config.early_stopping, config.num_return_sequences, config.num_beam_groups, config.max_length,
            )
            result = run_group_beam(plan, step, backend, input_ids.clone(), scorer, reorder=step.reorder)
        else:
            result = run_beam(
                plan,
                step,
                backend,
                input_ids,
                num_beams=config.num_beams,
                num_return_sequences=config.num_return_sequences,
                length_penalty=config.length_penalty,
                early_stopping=config.early_stopping,
                reorder=step.reorder,
            )
        if not config.return_dict_in_generate:
            return result.sequences
        return self._output(config, step, result, beam=True)

    def _prepare_model_inputs(
        self, inputs: torch.Tensor, config: GenerationConfig, model_kwargs: dict, eos_ids: list[int], pad_id: int | None
    ) -> _Prepared:
        """Attention mask, encoder pass and decoder start (encoder-decoder), then the expansion for beams and
        return sequences (repeat-interleave: rows x0,x0,x1,x1), in transformers' order."""
        attention_mask = model_kwargs.get("attention_mask")
        encoder_outputs = model_kwargs.get("encoder_outputs")
        if attention_mask is None and encoder_outputs is None:
            attention_mask = _infer_attention_mask(inputs, pad_id, eos_ids)
        elif attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape != inputs.shape):
            raise ValueError(
                f"`attention_mask` must be 2D with the shape of the input ids {tuple(inputs.shape)}, "
                f"got {tuple(attention_mask.shape)}."
            )
        expand = max(config.num_beams, config.num_return_sequences)
        if not self.config.is_encoder_decoder:
            if pad_id is not None and inputs.shape[0] > 1 and bool((inputs[:, -1] == pad_id).any()):
                logger.warning(
                    "A decoder-only architecture is being used, but right-padding was detected! For correct "
                    "generation results, please set `padding_side='left'` when initializing the tokenizer."
                )
            return _Prepared(inputs.repeat_interleave(expand, 0), attention_mask.repeat_interleave(expand, 0))
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(
                input_ids=inputs, attention_mask=attention_mask, return_dict=True,
                output_attentions=config.output_attentions, output_hidden_states=config.output_hidden_states,
            )
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        batch = encoder_outputs.last_hidden_state.shape[0]
        decoder_ids = self._decoder_start_ids(config, batch, model_kwargs.get("decoder_input_ids"), inputs.device)
        expanded = copy.copy(encoder_outputs)
        expanded["last_hidden_state"] = encoder_outputs.last_hidden_state.repeat_interleave(expand, 0)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(expand, 0)
        return _Prepared(decoder_ids.repeat_interleave(expand, 0), mask, expanded)

    def _decoder_start_ids(
        self, config: GenerationConfig, batch: int, decoder_input_ids: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
        if start is None:
            raise ValueError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation.")
        start_ids = torch.full((batch, 1), int(start), dtype=torch.long, device=device)
        if decoder_input_ids is None:
            return start_ids
        if bool((decoder_input_ids[:, 0] != start).all()):  # transformers prepends the start token when missing
            return torch.cat([start_ids, decoder_input_ids], dim=-1)
        return decoder_input_ids

    # -- argument preparation (transformers 4.57 order) ---------------------------------------------------
    def _check_supported(self, config: GenerationConfig, model_kwargs: dict, prefix_fn: Any, assistant: Any) -> None:
        mode = config.get_generation_mode()
        if config.num_beams > 1 and config.num_return_sequences > config.num_beams:
            raise ValueError(
                f"`num_return_sequences` ({config.num_return_sequences}) has to be smaller or equal to `num_beams` "
                f"({config.num_beams})."
            )
        if mode == "greedy_search" and config.num_return_sequences > 1:
            raise ValueError(
                "Greedy methods without beam search do not support `num_return_sequences` different than 1 "
                f"(got {config.num_return_sequences})."
            )
        if assistant is not None:
            raise NotImplementedError("assisted generation (assistant_model) is not implemented in pyengine.")
        allowed = _MODEL_KWARGS | (_SEQ2SEQ_KWARGS if self.config.is_encoder_decoder else set())
        unused = [k for k in model_kwargs if k not in allowed]
        if unused:
            raise ValueError(
                f"The following `model_kwargs` are not used by the model: {unused} (note: typos in the generate "
                "arguments will also show up in this list)"
            )
        if model_kwargs.get("attention_mask", 0) is None:
            model_kwargs.pop("attention_mask")

    def _prepare_input_ids(self, inputs: torch.Tensor | None, config: GenerationConfig, model_kwargs: dict) -> torch.Tensor:
        if inputs is None and self.config.is_encoder_decoder and model_kwargs.get("encoder_outputs") is not None:
            enc = model_kwargs["encoder_outputs"]
            hidden = enc[0] if isinstance(enc, (tuple, list)) else enc.last_hidden_state
            return torch.full(hidden.shape[:2], -100, dtype=torch.long, device=hidden.device)  # transformers' dummy
        if inputs is None:
            if config.bos_token_id is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            return torch.full((1, 1), int(config.bos_token_id), dtype=torch.long, device=self.device)
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"`inputs` must be a torch.LongTensor of shape [batch, length], got {type(inputs).__name__}.")
        if inputs.dim() != 2:
            raise ValueError(f"`inputs` must have shape [batch, length], got {tuple(inputs.shape)}.")
        if inputs.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"`inputs` must hold integer token ids, got dtype {inputs.dtype}.")
        vocab = self.config.vocab_size
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= vocab):
            bad = sorted({int(t) for t in inputs.reshape(-1).tolist() if t < 0 or t >= vocab})[:10]
            raise ValueError(
                f"`input_ids` holds token ids outside the model's vocabulary [0, {vocab}): {bad}. "
                "Check that the tokenizer matches the model."
            )
        return inputs.long()

    def _prepare_special_tokens(self, config: GenerationConfig, has_mask: bool) -> tuple[list[int], int | None]:
        eos = config.eos_token_id
        eos_ids = [] if eos is None else _token_ids("eos_token_id", eos)
        pad = config.pad_token_id
        if pad is not None:
            (pad,) = _token_ids("pad_token_id", pad, single=True)
        if pad is None and eos_ids:
            if not has_mask:
                logger.warning(
                    "The attention mask and the pad token id were not set. As a consequence, you may observe "
                    "unexpected behavior. Please pass your input's `attention_mask` to obtain reliable results."
                )
            pad = eos_ids[0]
            logger.warning(f"Setting `pad_token_id` to `eos_token_id`:{pad} for open-end generation.")
        return eos_ids, (None if pad is None else int(pad))

    def _prepare_lengths(self, config: GenerationConfig, input_len: int, explicit_max: bool, explicit_min: bool) -> None:
        if config.max_new_tokens is not None:
            if explicit_max:
                logger.warning(
                    f"Both `max_new_tokens` (={config.max_new_tokens}) and `max_length`(={config.max_length}) seem to "
                    "have been set. `max_new_tokens` will take precedence."
                )
            config.max_length = config.max_new_tokens + input_len
        elif not explicit_max and config.max_length == GenerationConfig().max_length:
            # transformers 4.57: the model-agnostic default means 20 *new* tokens, capped by the position table.
            warnings.warn(
                f"Using the model-agnostic default `max_length` (={config.max_length}) to control the generation "
                "length. We recommend setting `max_new_tokens` to control the maximum length of the generation.",
                UserWarning,
                stacklevel=3,
            )
            config.max_length = config.max_length + input_len
            max_pos = getattr(self.config, "max_position_embeddings", None)
            if max_pos is not None:
                config.max_length = min(config.max_length, max_pos)
        if config.min_new_tokens is not None:
            config.min_length = config.min_new_tokens + input_len
            config.min_new_tokens = None
        if input_len >= config.max_length:
            raise ValueError(
                f"Input length of input_ids is {input_len}, but `max_length` is set to {config.max_length}. This can "
                "lead to unexpected behavior. You should consider increasing `max_length` or, better yet, setting "
                "`max_new_tokens`."
            )
        # Learned absolute positions (GPT-2's `n_positions` table) end at the table size; RoPE and relative
        # positions (LLaMA, T5) have no such limit. Without this check the embedding lookup fails with an IndexError.
        max_pos = None if self.config.is_encoder_decoder else getattr(self.config, "n_positions", None)
        if max_pos is not None and config.max_length > max_pos:
            arg = "max_new_tokens" if config.max_new_tokens is not None else "max_length"
            raise ValueError(
                f"`{arg}` asks for sequences of {config.max_length} tokens (prompt of {input_len} included), but the "
                f"model has learned positions for {max_pos} (`max_position_embeddings`/`n_positions`). Lower `{arg}` "
                "or shorten the prompt."
            )

    def _check_pad_token(self, pad_id: int | None, eos_ids: list[int], num_beams: int, rows: int) -> None:
        """Greedy / sampling feed `pad_token_id` to rows that finished while others go on, so with several rows
        and a reachable EOS it must be a real token id; otherwise the embedding lookup fails with an IndexError."""
        vocab = self.config.vocab_size
        if num_beams > 1 or rows < 2 or pad_id is None or 0 <= pad_id < vocab:
            return
        if any(0 <= e < vocab for e in eos_ids):
            raise ValueError(
                f"`pad_token_id` ({pad_id}) is outside the vocabulary [0, {vocab}), but rows that reach "
                f"`eos_token_id` ({eos_ids}) are fed it on later steps. Set `pad_token_id` to a token id of the model "
                "(for example the EOS id)."
            )


def _token_ids(name: str, value: Any, single: bool = False) -> list[int]:
    """An id (or, unless `single`, a list of ids; tensors too) as ints; anything else is refused naming the
    argument rather than failing in `int()` (`"a"`) or silently truncating (`2.5`)."""
    items = value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value
    items = [items] if isinstance(items, numbers.Integral) else items
    ok = isinstance(items, (list, tuple)) and (len(items) == 1 or not single)
    if not ok or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        what = "an integer token id" if single else "an integer token id or a list of them"
        raise ValueError(f"`{name}` has to be {what}, but is {value!r}.")
    return [int(i) for i in items]


@contextlib.contextmanager
def _explain_invalid_scores(config: GenerationConfig) -> Iterator[None]:
    """torch.multinomial's "probability tensor contains either inf, nan or element < 0" as a ValueError that
    says what to change. Costs nothing per step: only an error that already happened is reworded."""
    try:
        yield
    except RuntimeError as exc:
        if not config.do_sample or "probability tensor contains" not in str(exc):
            raise
        raise ValueError(
            "Sampling needs finite next-token scores with at least one allowed token per row, but a step's scores "
            "held NaN or +inf, or were -inf everywhere (every token filtered). Pass `remove_invalid_values=True` to "
            "replace NaN/+inf, check the model for overflow (float16), or relax `bad_words_ids` / `min_length` / "
            "custom processors that ban every token."
        ) from exc


def _infer_attention_mask(input_ids: torch.Tensor, pad_id: int | None, eos_ids: list[int]) -> torch.Tensor:
    """transformers' rule: mask pads only when pad is in the inputs and is not also an EOS id."""
    if pad_id is not None and pad_id not in eos_ids and bool((input_ids == pad_id).any()):
        return input_ids.ne(pad_id).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def _framework_processors(config: GenerationConfig, prompt_ids: torch.Tensor, prefix_fn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.encoder_repetition_penalty is not None and config.encoder_repetition_penalty != 1.0:
        out["encoder_repetition_penalty"] = EncoderRepetitionPenaltyLogitsProcessor(
            float(config.encoder_repetition_penalty), prompt_ids
        )
    if config.encoder_no_repeat_ngram_size:
        out["encoder_no_repeat_ngram"] = EncoderNoRepeatNGramLogitsProcessor(config.encoder_no_repeat_ngram_size, prompt_ids)
    if prefix_fn is not None:
        out["prefix_constrained"] = PrefixConstrainedLogitsProcessor(prefix_fn, config.num_beams // config.num_beam_groups)
    return out


def _custom_criteria(criteria: StoppingCriteriaList | None) -> list[Any]:
    out = []
    for c in criteria or []:
        if not callable(c):
            raise TypeError(f"stopping criterion {c!r} is not callable")
        out.append(c)
    return out
