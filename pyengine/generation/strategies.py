"""The public per-strategy methods of transformers <= 4.40: greedy_search, sample, beam_search, beam_sample,
group_beam_search, with their documented signatures.

transformers 4.57 removed them; code written against them still runs here. Each builds a DecodePlan from
the caller's processor and stopping-criteria lists (our classes run as engine ops, any other object is
called as-is) and runs the shared engine: the plain loop for greedy/sample, the classic scorer-driven
beam loop for the beam methods (the caller's `beam_scorer` does the bookkeeping, as in 4.40).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from pyengine.backends.torch.backend import TorchBackend
from pyengine.engine import loop
from pyengine.engine.group_beam_search import run_group_beam
from pyengine.engine.plan import DecodePlan
from pyengine.generation.logits_process import as_specs
from pyengine.generation.step import CausalLMStep, Seq2SeqStep
from pyengine.generation.stopping_criteria import MaxLengthCriteria
from pyengine.modeling_outputs import BaseModelOutput


class StrategyMethodsMixin:
    """Adds the five public strategy methods to a model that has `generation_config` and `forward`."""

    def greedy_search(self, input_ids: torch.LongTensor, logits_processor: Any = None, stopping_criteria: Any = None,
                      max_length: int | None = None, pad_token_id: int | None = None,
                      eos_token_id: int | list[int] | None = None, output_attentions: bool | None = None,
                      output_hidden_states: bool | None = None, output_scores: bool | None = None,
                      output_logits: bool | None = None, return_dict_in_generate: bool | None = None,
                      synced_gpus: bool = False, streamer: Any = None, **model_kwargs: Any) -> Any:
        """Greedy decoding with the given processors and stopping criteria (transformers 4.40 signature)."""
        return self._strategy("greedy", input_ids, logits_processor, None, stopping_criteria, max_length,
                              pad_token_id, eos_token_id, output_attentions, output_hidden_states, output_scores,
                              output_logits, return_dict_in_generate, model_kwargs)

    def sample(self, input_ids: torch.LongTensor, logits_processor: Any = None, stopping_criteria: Any = None,
               logits_warper: Any = None, max_length: int | None = None, pad_token_id: int | None = None,
               eos_token_id: int | list[int] | None = None, output_attentions: bool | None = None,
               output_hidden_states: bool | None = None, output_scores: bool | None = None,
               output_logits: bool | None = None, return_dict_in_generate: bool | None = None,
               synced_gpus: bool = False, streamer: Any = None, **model_kwargs: Any) -> Any:
        """Multinomial sampling after processors then warpers (draws with torch's global RNG)."""
        return self._strategy("sample", input_ids, logits_processor, logits_warper, stopping_criteria, max_length,
                              pad_token_id, eos_token_id, output_attentions, output_hidden_states, output_scores,
                              output_logits, return_dict_in_generate, model_kwargs)

    def beam_search(self, input_ids: torch.LongTensor, beam_scorer: Any, logits_processor: Any = None,
                    stopping_criteria: Any = None, max_length: int | None = None, pad_token_id: int | None = None,
                    eos_token_id: int | list[int] | None = None, output_attentions: bool | None = None,
                    output_hidden_states: bool | None = None, output_scores: bool | None = None,
                    output_logits: bool | None = None, return_dict_in_generate: bool | None = None,
                    synced_gpus: bool = False, **model_kwargs: Any) -> Any:
        """Classic beam search driven by `beam_scorer` over `input_ids` `[batch * num_beams, S]`."""
        return self._strategy("beam", input_ids, logits_processor, None, stopping_criteria, max_length, pad_token_id,
                              eos_token_id, output_attentions, output_hidden_states, output_scores, output_logits,
                              return_dict_in_generate, model_kwargs, beam_scorer=beam_scorer)

    def beam_sample(self, input_ids: torch.LongTensor, beam_scorer: Any, logits_processor: Any = None,
                    stopping_criteria: Any = None, logits_warper: Any = None, max_length: int | None = None,
                    pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                    output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                    output_scores: bool | None = None, output_logits: bool | None = None,
                    return_dict_in_generate: bool | None = None, synced_gpus: bool = False,
                    **model_kwargs: Any) -> Any:
        """Beam sampling: candidates drawn without replacement from the warped, accumulated scores."""
        return self._strategy("beam_sample", input_ids, logits_processor, logits_warper, stopping_criteria,
                              max_length, pad_token_id, eos_token_id, output_attentions, output_hidden_states,
                              output_scores, output_logits, return_dict_in_generate, model_kwargs,
                              beam_scorer=beam_scorer)

    def group_beam_search(self, input_ids: torch.LongTensor, beam_scorer: Any, logits_processor: Any = None,
                          stopping_criteria: Any = None, max_length: int | None = None,
                          pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                          output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                          output_scores: bool | None = None, output_logits: bool | None = None,
                          return_dict_in_generate: bool | None = None, synced_gpus: bool = False,
                          **model_kwargs: Any) -> Any:
        """Diverse beam search; `beam_scorer.num_beam_groups` sets the groups."""
        return self._strategy("group_beam", input_ids, logits_processor, None, stopping_criteria, max_length,
                              pad_token_id, eos_token_id, output_attentions, output_hidden_states, output_scores,
                              output_logits, return_dict_in_generate, model_kwargs, beam_scorer=beam_scorer)

    # -- shared plumbing ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _strategy(self, mode: str, input_ids: torch.LongTensor, processors: Any, warpers: Any, criteria: Any,
                  max_length: int | None, pad: int | None, eos: Any, out_attn: bool | None, out_hidden: bool | None,
                  out_scores: bool | None, out_logits: bool | None, return_dict: bool | None,
                  model_kwargs: dict[str, Any], beam_scorer: Any = None) -> Any:
        gen = self.generation_config
        config = copy.deepcopy(gen)
        config.update(
            output_attentions=_pick(out_attn, gen.output_attentions),
            output_hidden_states=_pick(out_hidden, gen.output_hidden_states),
            output_scores=_pick(out_scores, gen.output_scores),
            output_logits=_pick(out_logits, gen.output_logits),
            return_dict_in_generate=_pick(return_dict, gen.return_dict_in_generate),
            use_cache=model_kwargs.pop("use_cache", gen.use_cache),
        )
        eos = _pick(eos, gen.eos_token_id)
        eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        pad = _pick(pad, gen.pad_token_id)
        config.max_length, user_criteria = _split_criteria(criteria, _pick(max_length, gen.max_length), mode)
        specs = as_specs(processors) + as_specs(warpers)
        plan = DecodePlan(
            strategy="sample" if mode in ("sample", "beam_sample") else "greedy",
            processors=specs,
            max_length=config.max_length,
            eos_token_ids=tuple(eos_ids),
            pad_token_id=pad if pad is not None else (eos_ids[0] if eos_ids else None),
            stopping=user_criteria,
            output_scores=bool(config.return_dict_in_generate and config.output_scores),
            output_logits=bool(config.return_dict_in_generate and config.output_logits),
        )
        step = self._strategy_step(input_ids, config, model_kwargs)
        backend = TorchBackend(input_ids.device)
        if mode in ("greedy", "sample"):
            result = loop.run(plan, step, backend, input_ids)
        elif beam_scorer is None:
            raise ValueError(f"{mode} needs a `beam_scorer` (e.g. BeamSearchScorer(batch_size, num_beams, device)).")
        else:
            result = run_group_beam(plan, step, backend, input_ids.clone(), beam_scorer, reorder=step.reorder,
                                    do_sample=mode == "beam_sample")
        if not config.return_dict_in_generate:
            return result.sequences
        return self._output(config, step, result, beam=mode not in ("greedy", "sample"))

    def _strategy_step(self, input_ids: torch.Tensor, config: Any, model_kwargs: dict[str, Any]) -> Any:
        """The model step for the strategy methods: `encoder_outputs` (already expanded) for encoder-decoders."""
        mask = model_kwargs.pop("attention_mask", None)
        encoder_outputs = model_kwargs.pop("encoder_outputs", None)
        if model_kwargs:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {list(model_kwargs)}")
        if self.config.is_encoder_decoder:
            if encoder_outputs is None:
                raise ValueError("encoder-decoder models need `encoder_outputs=model.get_encoder()(...)` here.")
            if isinstance(encoder_outputs, (tuple, list)):
                encoder_outputs = BaseModelOutput(*encoder_outputs)
            return Seq2SeqStep(self, encoder_outputs, mask, config, {})
        return CausalLMStep(self, torch.ones_like(input_ids) if mask is None else mask, config, {})


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _split_criteria(criteria: Any, max_length: int | None, mode: str) -> tuple[int, list[Any]]:
    """The max length (a MaxLengthCriteria, else `max_length`, which defaults to the generation config's, as the
    reference documents) and the other criteria."""
    lengths = [c.max_length for c in criteria or [] if isinstance(c, MaxLengthCriteria)]
    others = [c for c in criteria or [] if not isinstance(c, MaxLengthCriteria)]
    if max_length is not None and not lengths:
        lengths.append(max_length)
    if not lengths:
        raise ValueError(
            f"{mode} search needs a maximum length: add `MaxLengthCriteria(max_length=...)` to `stopping_criteria`, "
            "pass `max_length`, or set `model.generation_config.max_length`."
        )
    return min(lengths), others
