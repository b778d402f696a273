"""transformers-compatible BeamScorer / BeamSearchScorer for PyTorch (the classic, 4.40-era API).

They bind the engine's framework-neutral scorer (`pyengine.engine.beam_scorer`) to the torch backend, with
transformers' constructor signature (`device` included), so code that builds a scorer and calls
`model.beam_search(input_ids, beam_scorer, ...)` keeps working.
"""

from __future__ import annotations

from typing import Any

import torch

from pyengine.backends.torch.backend import TorchBackend
from pyengine.engine import beam_scorer as engine_scorer
from pyengine.engine.beam_scorer import BeamHypotheses

__all__ = ["BeamHypotheses", "BeamScorer", "BeamSearchScorer"]


class BeamScorer:
    """Abstract base: `process(...)` one step, `finalize(...)` the output (transformers' interface)."""

    def process(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError("This is an abstract method.")

    def finalize(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError("This is an abstract method.")


class BeamSearchScorer(engine_scorer.BeamSearchScorer, BeamScorer):
    """Standard (and group) beam search bookkeeping.

    Args:
        batch_size: inputs (before beam expansion).
        num_beams: beams per input (> 1).
        device: where the returned tensors live.
        length_penalty: exponent on the generated length when scoring finished hypotheses.
        do_early_stopping: True, False or "never" (see transformers' BeamHypotheses.is_done).
        num_beam_hyps_to_keep: hypotheses returned per input by `finalize`.
        num_beam_groups: groups for diverse beam search; must divide num_beams.
        max_length: needed when do_early_stopping is "never".

    Example:
        >>> scorer = BeamSearchScorer(batch_size=1, num_beams=3, device="cpu")
        >>> out = model.beam_search(input_ids.repeat_interleave(3, 0), scorer, stopping_criteria=criteria)
    """

    def __init__(
        self,
        batch_size: int,
        num_beams: int,
        device: torch.device | str = "cpu",
        length_penalty: float | None = 1.0,
        do_early_stopping: bool | str | None = False,
        num_beam_hyps_to_keep: int | None = 1,
        num_beam_groups: int | None = 1,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            TorchBackend(device), batch_size, num_beams, length_penalty, do_early_stopping, num_beam_hyps_to_keep,
            num_beam_groups, max_length,
        )
        self.device = device
