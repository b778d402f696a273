"""transformers-compatible LogitsProcessor classes for PyTorch, backed by the engine's specs and ops.

Each class validates its arguments in `__init__` with transformers' messages and, when called as
`processor(input_ids, scores)`, applies the same op the engine uses (`pyengine.engine.processors`), so a
user's hand-built `LogitsProcessorList` and `generate()` compute the same thing. They never modify
`scores` in place. `generate()` recognises these classes and runs them as engine specs.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch

from pyengine.engine import processors as P


@lru_cache(maxsize=1)
def _ops() -> Any:
    from pyengine.backends.torch.backend import TorchBackend

    return TorchBackend().ops


class LogitsProcessor:
    """Base class: `__call__(input_ids [B, T], scores [B, V]) -> scores [B, V]`."""

    spec: Any = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.spec is None:
            raise NotImplementedError(f"{type(self).__name__} is an abstract class; implement __call__.")
        return self.spec(_ops(), input_ids, scores)


LogitsWarper = LogitsProcessor


def as_specs(processors: Any) -> list[Any]:
    """A user's processor list as engine specs: our classes run as engine ops (unless a subclass overrides
    `__call__`), any other object is wrapped and called as transformers calls it."""
    out = []
    for proc in processors or []:
        spec = getattr(proc, "spec", None)
        native = spec is not None and type(proc).__call__ is LogitsProcessor.__call__
        out.append(spec if native else P.Custom(proc))
    return out


class LogitsProcessorList(list):
    """Applies each processor in order; extra kwargs reach the processors whose `__call__` takes them."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        for processor in self:
            params = inspect.signature(processor.__call__).parameters
            if len(params) > 2:
                missing = [p for p in list(params)[2:] if p not in kwargs and params[p].kind is params[p].POSITIONAL_OR_KEYWORD]
                if missing:
                    raise ValueError(
                        f"Make sure that all the required parameters: {list(params)} for {type(processor)} are passed "
                        "to the logits processor."
                    )
                scores = processor(input_ids, scores, **kwargs)
            else:
                scores = processor(input_ids, scores)
        return scores


class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature: float) -> None:
        if not isinstance(temperature, float) or not (temperature > 0):
            except_msg = (
                f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your next token "
                "scores will be invalid."
            )
            if isinstance(temperature, float) and temperature == 0.0:
                except_msg += " If you're looking for greedy decoding strategies, set `do_sample=False`."
            raise ValueError(except_msg)
        self.temperature = temperature
        self.spec = P.Temperature(temperature)


class TopKLogitsWarper(LogitsProcessor):
    def __init__(self, top_k: int, filter_value: float = -float("Inf"), min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.spec = P.TopK(top_k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return _ops().top_k_mask(scores, self.top_k, self.filter_value, 1)


class TopPLogitsWarper(LogitsProcessor):
    def __init__(self, top_p: float, filter_value: float = -float("Inf"), min_tokens_to_keep: int = 1) -> None:
        top_p = float(top_p)
        if top_p < 0 or top_p > 1.0:
            raise ValueError(f"`top_p` has to be a float > 0 and < 1, but is {top_p}")
        if not isinstance(min_tokens_to_keep, int) or (min_tokens_to_keep < 1):
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.top_p, self.filter_value, self.min_tokens_to_keep = top_p, filter_value, min_tokens_to_keep
        self.spec = P.TopP(top_p, min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return _ops().top_p_mask(scores, self.top_p, self.filter_value, self.min_tokens_to_keep)


class MinPLogitsWarper(LogitsProcessor):
    def __init__(self, min_p: float, filter_value: float = -float("Inf"), min_tokens_to_keep: int = 1) -> None:
        if not (0 <= min_p <= 1.0):
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        if not isinstance(min_tokens_to_keep, int) or (min_tokens_to_keep < 1):
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.min_p, self.filter_value, self.min_tokens_to_keep = min_p, filter_value, min_tokens_to_keep
        self.spec = P.MinP(min_p, min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return _ops().min_p_mask(scores, self.min_p, self.filter_value, self.min_tokens_to_keep)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    def __init__(self, penalty: float) -> None:
        if not isinstance(penalty, float) or not (penalty > 0):
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        self.penalty = penalty
        self.spec = P.RepetitionPenalty(penalty)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size
        self.spec = P.NoRepeatNGram(ngram_size)


class NoBadWordsLogitsProcessor(LogitsProcessor):
    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | torch.Tensor | None = None) -> None:
        if not isinstance(bad_words_ids, list) or len(bad_words_ids) == 0:
            raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {bad_words_ids}.")
        if any(not isinstance(w, list) for w in bad_words_ids):
            raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {bad_words_ids}.")
        if any(any(not isinstance(t, int) or t < 0 for t in w) for w in bad_words_ids):
            raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is {bad_words_ids}.")
        eos = _as_id_list(eos_token_id)
        self.bad_word_ids = [w for w in bad_words_ids if not (len(w) == 1 and w[0] in eos)]
        self.spec = P.BadWords(tuple(tuple(w) for w in self.bad_word_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = [t for w in self.bad_word_ids for t in w if t >= scores.shape[-1]]
        if bad:
            raise ValueError(
                f"The model vocabulary size is {scores.shape[-1]}, but the following tokens were being biased: {bad}"
            )
        return self.spec(_ops(), input_ids, scores)


class MinLengthLogitsProcessor(LogitsProcessor):
    def __init__(self, min_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` has to be a non-negative integer, but is {min_length}")
        self.min_length = min_length
        self.eos_token_id = _as_id_list(eos_token_id)
        self.spec = P.MinLength(min_length, tuple(self.eos_token_id))


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    def __init__(
        self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu"
    ) -> None:
        for arg_name, arg_value in [("prompt_length_to_skip", prompt_length_to_skip), ("min_new_tokens", min_new_tokens)]:
            if not isinstance(arg_value, int) or arg_value < 0:
                raise ValueError(f"`{arg_name}` has to be a positive integer, but is {arg_value}")
        self.spec = P.MinNewTokens(prompt_length_to_skip, min_new_tokens, tuple(_as_id_list(eos_token_id)))


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, bos_token_id: int) -> None:
        self.bos_token_id = bos_token_id
        self.spec = P.ForcedBOS(bos_token_id)


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, max_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        self.max_length = max_length
        self.eos_token_id = _as_id_list(eos_token_id)
        self.spec = P.ForcedEOS(max_length, tuple(self.eos_token_id))


class HammingDiversityLogitsProcessor(LogitsProcessor):
    """Diverse beam search penalty; called with `current_tokens` and `beam_group_idx` by group beam search."""

    def __init__(self, diversity_penalty: float, num_beams: int, num_beam_groups: int) -> None:
        if not isinstance(diversity_penalty, float) or (not diversity_penalty > 0.0):
            raise ValueError("`diversity_penalty` should be a float strictly larger than 0.")
        if not isinstance(num_beams, int) or num_beams < 2:
            raise ValueError("`num_beams` should be an integer strictly larger than 1.")
        if not isinstance(num_beam_groups, int) or num_beam_groups < 2:
            raise ValueError("`num_beam_groups` should be an integer strictly larger than 1.")
        if num_beam_groups > num_beams:
            raise ValueError("`beam_groups` has to be smaller or equal to `num_beams`.")
        self._diversity_penalty = diversity_penalty
        self._num_beams = num_beams
        self._num_sub_beams = num_beams // num_beam_groups
        self.spec = P.HammingDiversity(diversity_penalty, num_beams, num_beam_groups)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, current_tokens: torch.LongTensor, beam_group_idx: int
    ) -> torch.FloatTensor:
        return self.spec(_ops(), input_ids, scores, current_tokens=current_tokens, beam_group_idx=beam_group_idx)


class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Inverse repetition penalty on the prompt/encoder tokens (`penalty > 1` favours them)."""

    def __init__(self, penalty: float, encoder_input_ids: torch.LongTensor) -> None:
        if not isinstance(penalty, float) or not (penalty > 0):
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        self.penalty = 1 / penalty
        self.encoder_input_ids = encoder_input_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return _ops().repetition_penalty(scores, self.encoder_input_ids, self.penalty)


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban tokens that would repeat an n-gram of the encoder input (encoder-decoder models)."""

    def __init__(self, encoder_ngram_size: int, encoder_input_ids: torch.LongTensor) -> None:
        if not isinstance(encoder_ngram_size, int) or encoder_ngram_size <= 0:
            raise ValueError(f"`encoder_ngram_size` has to be a strictly positive integer, but is {encoder_ngram_size}")
        self.ngram_size = encoder_ngram_size
        if len(encoder_input_ids.shape) == 1:
            encoder_input_ids = encoder_input_ids.unsqueeze(0)
        self.batch_size = encoder_input_ids.shape[0]
        self.generated_ngrams = [_ngram_table(row, encoder_ngram_size) for row in encoder_input_ids.tolist()]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        num_hypos = scores.shape[0]
        num_beams = num_hypos // self.batch_size
        cur_len = input_ids.shape[-1]
        out = scores.clone()
        for i, row in enumerate(input_ids.tolist()):
            key = tuple(row[cur_len + 1 - self.ngram_size : cur_len])
            banned = self.generated_ngrams[i // num_beams].get(key, [])
            if banned:
                out[i, banned] = -float("inf")
        return out


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Only allow the tokens `prefix_allowed_tokens_fn(batch_id, input_ids_row)` returns."""

    def __init__(self, prefix_allowed_tokens_fn: Any, num_beams: int) -> None:
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, -float("inf"))
        rows = input_ids.view(-1, self._num_beams, input_ids.shape[-1])
        for batch_id, beam_sent in enumerate(rows):
            for beam_id, sent in enumerate(beam_sent):
                allowed = self._prefix_allowed_tokens_fn(batch_id, sent)
                if len(allowed) == 0:
                    raise ValueError(
                        f"`prefix_allowed_tokens_fn` returned an empty list for batch ID {batch_id}. This means that "
                        "the constraint is unsatisfiable. Please check your implementation of "
                        "`prefix_allowed_tokens_fn` "
                    )
                mask[batch_id * self._num_beams + beam_id, allowed] = 0
        return scores + mask


def _ngram_table(tokens: list[int], n: int) -> dict[tuple[int, ...], list[int]]:
    table: dict[tuple[int, ...], list[int]] = {}
    for start in range(len(tokens) - n + 1):
        gram = tokens[start : start + n]
        table.setdefault(tuple(gram[:-1]), []).append(gram[-1])
    return table


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    spec = P.InfNanRemove()


def _as_id_list(ids: Any) -> list[int]:
    if ids is None:
        return []
    if isinstance(ids, torch.Tensor):
        return [int(i) for i in ids.reshape(-1).tolist()]
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]
