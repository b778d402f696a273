"""BeamSearchScorer and BeamHypotheses: the classic (transformers <= 4.40) beam bookkeeping, framework-neutral.

Group beam search and the public `BeamSearchScorer` class use this form; plain beam search uses the
vectorised algorithm in `beam_search.py` (transformers 4.57). Hypothesis lists are short Python lists
(at most `group_size` per batch item and group); arrays stay the backend's own.

Semantics (transformers 4.40 `generation/beam_search.py`):
- `process` walks each batch item's 2*group_size candidates in rank order: an EOS candidate ranked in the
  top `group_size` becomes a finished hypothesis (stored without the EOS token; its score includes the EOS
  log-prob, normalised by `generated_len ** length_penalty`); other candidates fill the next beams.
- a batch item is done when it holds `group_size` hypotheses and no live beam can beat the worst one.
- `finalize` adds the open beams of unfinished items, returns the best `num_beam_hyps_to_keep` per item,
  pads with `pad_token_id` and writes EOS after hypotheses shorter than the output.
"""

from __future__ import annotations

from typing import Any

from pyengine.backends.base import Array, Backend


class BeamHypotheses:
    """The n-best finished hypotheses of one batch item (and group)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_length: int | None = None):
        if not isinstance(early_stopping, bool) and max_length is None:
            raise ValueError(
                "When `do_early_stopping` is set to a string, `max_length` must be defined. Ensure it is passed to the"
                " BeamScorer class instance at initialization time."
            )
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.num_beams = num_beams
        self.beams: list[tuple[float, Any, Any]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def add(self, hyp: Any, sum_logprobs: float, beam_indices: Any = None, generated_len: int | None = None) -> None:
        length = generated_len if generated_len is not None else hyp.shape[-1]
        score = sum_logprobs / (length**self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp, beam_indices))
            if len(self) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int, decoder_prompt_len: int = 0) -> bool:
        if len(self) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            best = best_sum_logprobs / (cur_len - decoder_prompt_len) ** self.length_penalty
        else:  # "never" with a positive length penalty: the longest possible hypothesis is the best case
            if self.max_length <= decoder_prompt_len:
                raise ValueError("max_length is not larger than decoder prompt length")
            best = best_sum_logprobs / (self.max_length - decoder_prompt_len) ** self.length_penalty
        return self.worst_score >= best


class BeamSearchScorer:
    """Classic beam bookkeeping over a backend's arrays (see module docstring)."""

    def __init__(
        self,
        backend: Backend,
        batch_size: int,
        num_beams: int,
        length_penalty: float = 1.0,
        do_early_stopping: bool | str = False,
        num_beam_hyps_to_keep: int = 1,
        num_beam_groups: int = 1,
        max_length: int | None = None,
    ) -> None:
        if not isinstance(num_beams, int) or num_beams <= 1:
            raise ValueError(
                f"`num_beams` has to be an integer strictly greater than 1, but is {num_beams}. For `num_beams` == 1,"
                " one should make use of `greedy_search` instead."
            )
        if not isinstance(num_beam_groups, int) or num_beam_groups > num_beams or num_beams % num_beam_groups != 0:
            raise ValueError(
                "`num_beam_groups` has to be an integer smaller or equal than `num_beams` and `num_beams` has to be"
                f" divisible by `num_beam_groups`, but is {num_beam_groups} with `num_beams` being {num_beams}."
            )
        self.backend = backend
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.do_early_stopping = do_early_stopping
        self.num_beam_hyps_to_keep = num_beam_hyps_to_keep
        self.num_beam_groups = num_beam_groups
        self.group_size = num_beams // num_beam_groups
        self._beam_hyps = [
            BeamHypotheses(self.group_size, length_penalty, do_early_stopping, max_length)
            for _ in range(batch_size * num_beam_groups)
        ]
        self._done = [False] * (batch_size * num_beam_groups)

    @property
    def is_done(self) -> bool:
        return all(self._done)

    def process(
        self,
        input_ids: Array,
        next_scores: Array,
        next_tokens: Array,
        next_indices: Array,
        pad_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        beam_indices: Any = None,
        group_index: int = 0,
        decoder_prompt_len: int = 0,
    ) -> dict[str, Array]:
        """One step for one group: `next_*` are `[B, 2*group_size]` candidates in rank order."""
        be, gs = self.backend, self.group_size
        cur_len = input_ids.shape[-1] + 1
        batch_size = len(self._beam_hyps) // self.num_beam_groups
        if batch_size != input_ids.shape[0] // gs:
            raise ValueError(
                f"A beam size of {input_ids.shape[0]} is used as the input, but a beam size of {gs} is expected by "
                "the beam scorer."
            )
        eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        scores_l, tokens_l, indices_l = be.to_list(next_scores), be.to_list(next_tokens), be.to_list(next_indices)
        out_scores, out_tokens, out_indices = [], [], []
        for b in range(batch_size):
            bg = b * self.num_beam_groups + group_index
            if self._done[bg]:
                if eos is None or pad_token_id is None:
                    raise ValueError("Generated beams >= num_beams -> eos_token_id and pad_token have to be defined")
                out_scores += [0.0] * gs
                out_tokens += [pad_token_id] * gs
                out_indices += [0] * gs
                continue
            row = self._process_row(b, bg, input_ids, scores_l[b], tokens_l[b], indices_l[b], eos, beam_indices,
                                    cur_len - decoder_prompt_len)
            out_scores += row[0]
            out_tokens += row[1]
            out_indices += row[2]
            self._done[bg] = self._done[bg] or self._beam_hyps[bg].is_done(max(scores_l[b]), cur_len, decoder_prompt_len)
        return {
            "next_beam_scores": be.asarray(out_scores, "float32"),
            "next_beam_tokens": be.asarray(out_tokens, "int64"),
            "next_beam_indices": be.asarray(out_indices, "int64"),
        }

    def _process_row(
        self, b: int, bg: int, input_ids: Array, scores: list, tokens: list, indices: list, eos: list[int] | None,
        beam_indices: Any, generated_len: int,
    ) -> tuple[list, list, list]:
        gs = self.group_size
        row_scores, row_tokens, row_indices = [], [], []
        for rank, (token, score, index) in enumerate(zip(tokens, scores, indices)):
            flat = b * gs + index
            if eos is not None and token in eos:
                if rank >= gs:  # an EOS outside the top group_size does not count
                    continue
                hyp_index = beam_indices[flat] + (flat,) if beam_indices is not None else None
                self._beam_hyps[bg].add(self.backend.copy(input_ids[flat]), score, hyp_index, generated_len)
            else:
                row_scores.append(score)
                row_tokens.append(token)
                row_indices.append(flat)
            if len(row_scores) == gs:
                break
        if len(row_scores) < gs:
            raise ValueError(
                f"At most {gs} tokens in {tokens} can be equal to `eos_token_id: {eos}`. Make sure {tokens} are "
                "corrected."
            )
        return row_scores, row_tokens, row_indices

    def finalize(
        self,
        input_ids: Array,
        final_beam_scores: Array,
        final_beam_tokens: Array,
        final_beam_indices: Array,
        max_length: int,
        pad_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        beam_indices: Any = None,
        decoder_prompt_len: int = 0,
    ) -> dict[str, Array]:
        be = self.backend
        batch_size = len(self._beam_hyps) // self.num_beam_groups
        eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        final_scores = be.to_list(final_beam_scores)
        for bg, hyps in enumerate(self._beam_hyps):
            if self._done[bg]:
                continue
            for j in range(self.group_size):
                flat = bg * self.group_size + j
                tokens = input_ids[flat]
                idx = beam_indices[flat] if beam_indices is not None else None
                hyps.add(tokens, final_scores[flat], idx, tokens.shape[-1] - decoder_prompt_len)
        best, best_idx, best_scores = [], [], []
        for i in range(batch_size):
            groups = self._beam_hyps[i * self.num_beam_groups : (i + 1) * self.num_beam_groups]
            ranked = sorted((h for g in groups for h in g.beams), key=lambda x: x[0])
            for _ in range(self.num_beam_hyps_to_keep):
                score, hyp, idx = ranked.pop()
                best.append(hyp)
                best_idx.append(idx)
                best_scores.append(score)
        lengths = [h.shape[-1] for h in best]
        width = min(max(lengths) + 1, max_length) if max_length is not None else max(lengths) + 1
        if min(lengths) != max(lengths) and pad_token_id is None:
            raise ValueError("`pad_token_id` has to be defined")
        # transformers allocates uninitialised memory and fills it with pad only when lengths differ; we fill
        # deterministically (pad, else 0) so equal-length outputs never expose garbage past an EOS.
        decoded = be.full((len(best), width), pad_token_id if pad_token_id is not None else 0, "int64")
        indices = be.full((len(best), width), -1, "int64") if best_idx and best_idx[0] is not None else None
        for i, hyp in enumerate(best):
            decoded[i, : lengths[i]] = hyp
            if indices is not None:
                indices[i, : len(best_idx[i])] = be.asarray(list(best_idx[i]), "int64")
            if lengths[i] < width:
                decoded[i, lengths[i]] = eos[0]
        return {"sequences": decoded, "sequence_scores": be.asarray(best_scores, "float32"), "beam_indices": indices}
