"""What goes into the batch engine (`Request`) and what comes out (`Result`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Request fields that are GenerationConfig fields, passed on as generate() keyword arguments.
GENERATION_FIELDS = (
    "max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p", "min_p",
    "repetition_penalty", "no_repeat_ngram_size", "num_beams", "length_penalty", "early_stopping",
)  # fmt: skip


@dataclass
class Request:
    """One prompt and its own generation parameters (None: the model's generation_config default).

    Args:
        prompt: text (needs the generator's tokenizer) or token ids.
        id: returned with the result (default: the request's position in the input).
        max_new_tokens: new-token limit (default 20, as transformers' model-agnostic default).
        min_new_tokens, do_sample, temperature, top_k, top_p, min_p, repetition_penalty,
            no_repeat_ngram_size: as in `generate()`.
        num_beams, length_penalty, early_stopping: beam search (beam sampling with `do_sample`), as in
            `generate()`; the K beams decode as K rows of the batch and share their common blocks.
        seed: seeds this request's own sampling generator (its tokens do not depend on its neighbours).
        stop: strings that end the completion; the text is cut before the first one found.
        ignore_eos: keep generating after EOS until `max_new_tokens` or a stop string.
        num_return_sequences: samples of this prompt (they share the prompt's KV blocks, copy-on-write;
            sample i draws with seed `seed + i`), or the best finished beams (at most `num_beams`).
            Greedy decoding returns one sequence, as in `generate()`.

    Example:
        >>> Request("The capital of France is", id="fr", max_new_tokens=8, stop=["."])
    """

    prompt: str | Sequence[int]
    id: Any = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    early_stopping: bool | str | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    num_return_sequences: int = 1

    def generation_kwargs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GENERATION_FIELDS if getattr(self, k) is not None}


@dataclass
class Completion:
    """One generated sequence: new token ids (EOS included when emitted) and their text."""

    token_ids: list[int]
    text: str | None
    finish_reason: str  # "eos" | "length" | "stop"
    score: float | None = None  # beam search: the length-normalised log-probability (sequences_scores)


@dataclass
class Result:
    """A finished request.

    Fields:
        id, index: the request's id and its position in the input.
        prompt_ids: the prompt's token ids.
        completions: one per returned sequence (`num_return_sequences`).
        ttft_s: seconds from the start of `generate()` to the request's first new token.
        latency_s: seconds from the start of `generate()` to the request's last token.
    """

    id: Any
    index: int
    prompt_ids: list[int]
    completions: list[Completion] = field(default_factory=list)
    ttft_s: float = 0.0
    latency_s: float = 0.0

    @property
    def token_ids(self) -> list[int]:
        return self.completions[0].token_ids

    @property
    def text(self) -> str | None:
        return self.completions[0].text

    @property
    def finish_reason(self) -> str:
        return self.completions[0].finish_reason

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


@dataclass
class BatchStats:
    """Running totals of a `generate()` call (read them from an `on_step` callback for progress bars).

    KV fields: `kv_blocks` in the pool, `kv_peak_blocks` held at once, `kv_utilisation` = valid token slots
    / slots in held blocks, averaged over steps (1.0 = no block waste), and its minimum.
    """

    requests: int = 0
    finished: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0
    seconds: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    preemptions: int = 0
    prefix_hit_tokens: int = 0
    kv_blocks: int = 0
    kv_block_size: int = 0
    kv_peak_blocks: int = 0
    kv_utilisation_sum: float = 0.0
    kv_utilisation_min: float = 1.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def kv_utilisation(self) -> float:
        return self.kv_utilisation_sum / self.steps if self.steps else 1.0

    def summary(self) -> dict[str, Any]:
        """A flat dict for logs and JSONL (time-to-first-token percentiles in seconds)."""
        return {
            "requests": self.finished,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 3),
            "new_tokens_per_s": round(self.tokens_per_s, 2),
            "ttft_p50_s": round(percentile(self.ttft_s, 50), 3),
            "ttft_p90_s": round(percentile(self.ttft_s, 90), 3),
            "ttft_p99_s": round(percentile(self.ttft_s, 99), 3),
            "steps": self.steps,
            "preemptions": self.preemptions,
            "prefix_hit_tokens": self.prefix_hit_tokens,
            "kv_blocks": self.kv_blocks,
            "kv_block_size": self.kv_block_size,
            "kv_peak_blocks_used": self.kv_peak_blocks,
            "kv_utilisation_mean": round(self.kv_utilisation, 4),
            "kv_utilisation_min": round(self.kv_utilisation_min, 4),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
