"""Per-request token choice with the engine's semantics: the same plan, the same ops, the same draws.

A request's GenerationConfig goes through `pyengine.engine.plan.build_plan`, exactly as `generate()` does;
its processor specs run through the torch backend's op table on that request's row only, with that
request's own history, so neighbours in the batch never change its scores. Sampling draws from the
request's own `torch.Generator` (seeded from its seed): `multinomial(softmax(scores))` consumes the
generator as `generate()` consumes torch's global generator after `torch.manual_seed(seed)`, so a single
sampled request reproduces `generate()`'s tokens, whatever else is in the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from pyengine.engine.plan import DecodePlan


class RequestSampler:
    """Chooses one token per step for one sequence.

    Args:
        plan: the request's DecodePlan (from `build_plan`).
        ops: the torch backend's op table.
        seed: seeds this sequence's generator (None: a random seed).
    """

    def __init__(self, plan: DecodePlan, ops: Any, seed: int | None) -> None:
        self.sample = plan.strategy == "sample"
        # Greedy never needs the argmax-invariant specs (temperature, top-k/p, min-p).
        self.processors = [
            p for p in plan.processors if self.sample or not getattr(p, "argmax_invariant", False)
        ]
        self.ops = ops
        self.generator: torch.Generator | None = None
        if self.sample:
            self.generator = torch.Generator()
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits: such rows are batched into one argmax."""
        return not self.sample and not self.processors

    def choose(self, logits: torch.Tensor, history: list[int]) -> int:
        """Next token for `logits` `[1, V]` (float32) after `history` (prompt + generated ids)."""
        scores = logits
        if self.processors:
            tokens = torch.tensor(history, dtype=torch.long)[None]  # [1, cur]
            for spec in self.processors:
                scores = spec(self.ops, tokens, scores)
        if not self.sample:
            return int(self.ops.argmax(scores)[0])
        return int(self.ops.sample_from_scores(scores, self.generator)[0])
