"""GenerationConfig -> DecodePlan: which strategy, which processor specs in which order, when to stop.

The order is transformers 4.57's `_get_logits_processor`: penalties and bans first, then the user's
processors, then (sampling only) temperature, top-k, top-p, min-p. Every value is checked here, against
the vocabulary too, so bad input fails before any model or kernel runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyengine.engine import processors as P

STRATEGIES = ("greedy", "sample")


@dataclass
class DecodePlan:
    """Everything the loop needs besides the model and the backend.

    Fields:
        strategy: "greedy" or "sample".
        processors: specs applied in order to each step's logits.
        max_length: total length (prompt + new tokens) at which every row stops.
        eos_token_ids: a row finishes when it emits one of these; later positions get `pad_token_id`.
        pad_token_id: filler for finished rows (required when eos_token_ids is non-empty).
        stopping: user criteria `fn(tokens [B, T], scores) -> bool [B] or bool`, called as-is.
        max_time: seconds after which every row stops (None: no limit).
        output_scores / output_logits: keep processed scores / raw logits of every step.
        sync: synced_gpus: `sync(this_process_done) -> every_process_done` (a collective); None = alone.
        fused_select: when set, replaces the processor chain and the selection: greedy (same tokens, one
            pass) or counter-based sampling (`seed=`).
        top_logits: k when only each row's k largest logits decide the tokens (`top_logits_needed`): a step
            may then return those (and any tied with the k-th) and -inf elsewhere. None: every logit counts.
    """

    strategy: str
    processors: list[Any]
    max_length: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    stopping: list[Callable[..., Any]] = field(default_factory=list)
    max_time: float | None = None
    output_scores: bool = False
    output_logits: bool = False
    sync: Callable[[bool], bool] | None = None
    fused_select: Any = None  # processors + selection in one op (fuse_greedy / fuse_sample), or None
    top_logits: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.eos_token_ids and self.pad_token_id is None:
            raise ValueError("`pad_token_id` is needed to pad rows that finished with EOS; pass pad_token_id.")


def build_plan(
    config: Any,
    *,
    vocab_size: int,
    prompt_length: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None,
    num_beams: int = 1,
    custom_processors: Sequence[Callable[..., Any]] = (),
    custom_criteria: Sequence[Callable[..., Any]] = (),
    framework_processors: dict[str, Callable[..., Any]] | None = None,
) -> DecodePlan:
    """Translate a validated GenerationConfig (already length-resolved) into a DecodePlan.

    `framework_processors` holds processors that need framework data the plan cannot build (keys:
    "encoder_repetition_penalty", "encoder_no_repeat_ngram", "prefix_constrained"); they are called as-is
    at their place in transformers' order.
    """
    extra = framework_processors or {}
    # An EOS id outside the vocabulary can never be produced; transformers accepts it (tiny test configs
    # keep GPT-2's 50256), so we do too: such rows simply run to max_length.
    eos = tuple(int(e) for e in eos_token_ids)
    live_eos = tuple(e for e in eos if 0 <= e < vocab_size)  # the ones a min-length ban can apply to
    specs: list[Any] = []
    if config.diversity_penalty and config.num_beam_groups > 1:
        specs.append(P.HammingDiversity(float(config.diversity_penalty), int(config.num_beams), int(config.num_beam_groups)))
    if "encoder_repetition_penalty" in extra:
        specs.append(P.Custom(extra["encoder_repetition_penalty"]))
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        specs.append(P.RepetitionPenalty(float(config.repetition_penalty)))
    if config.no_repeat_ngram_size:
        specs.append(P.NoRepeatNGram(int(config.no_repeat_ngram_size)))
    if "encoder_no_repeat_ngram" in extra:
        specs.append(P.Custom(extra["encoder_no_repeat_ngram"]))
    if config.bad_words_ids is not None:
        words = tuple(tuple(int(t) for t in w) for w in config.bad_words_ids if not (len(w) == 1 and w[0] in eos))
        _check_ids("bad_words_ids", [t for w in words for t in w], vocab_size)
        if words:
            specs.append(P.BadWords(words))
    if config.min_length and live_eos:
        specs.append(P.MinLength(int(config.min_length), live_eos))
    if config.min_new_tokens and live_eos:
        specs.append(P.MinNewTokens(prompt_length, int(config.min_new_tokens), live_eos))
    if "prefix_constrained" in extra:
        specs.append(P.Custom(extra["prefix_constrained"]))
    if config.forced_bos_token_id is not None:
        _check_ids("forced_bos_token_id", [int(config.forced_bos_token_id)], vocab_size)
        specs.append(P.ForcedBOS(int(config.forced_bos_token_id)))
    if config.forced_eos_token_id is not None:
        forced = config.forced_eos_token_id
        forced = tuple(forced) if isinstance(forced, list) else (int(forced),)
        _check_ids("forced_eos_token_id", forced, vocab_size)
        specs.append(P.ForcedEOS(config.max_length, forced))
    if config.remove_invalid_values:
        specs.append(P.InfNanRemove())
    specs.extend(custom_processors)  # already specs: recognised ones as ops, the rest wrapped in Custom
    if config.do_sample:
        # Beam sampling keeps at least one non-EOS continuation per beam (transformers' rule).
        min_keep = (len(eos) + 1 if eos else 2) if num_beams > 1 else 1
        specs.extend(_warpers(config, min_keep=min_keep))
    plan = DecodePlan(
        strategy="sample" if config.do_sample else "greedy",
        processors=specs,
        max_length=int(config.max_length),
        eos_token_ids=eos,
        pad_token_id=pad_token_id,
        stopping=list(custom_criteria),
        max_time=config.max_time,
        output_scores=bool(config.return_dict_in_generate and config.output_scores),
        output_logits=bool(config.return_dict_in_generate and config.output_logits),
    )
    if num_beams == 1:
        plan.fused_select = fuse_greedy(plan)
        plan.top_logits = top_logits_needed(plan)
    return plan


def top_logits_needed(plan: DecodePlan, maximum: Callable[[Any, int], Any] | None = None) -> Any:
    """How many of each row's largest logits decide `plan`'s tokens (an int), or None when every logit may.

    `maximum(top_k, min_tokens_to_keep)`: for a compiled loop whose top-k value is an array (a scalar the
    framework adds to), which the width then is too; default: Python ints.

    A step may then return those (ties with the last included) and -inf elsewhere: the processed scores, hence
    the tokens under any draw, are the same. Greedy: 1; sampling: the first top-k's k (at least
    min_tokens_to_keep), when only temperature (monotone, -inf stays -inf) comes before it and top-p / min-p
    only after it (they read the whole distribution, which top-k has cut to the kept set). A ban (min length,
    min new tokens, bad words: at most one token per EOS id or word per step) adds one per token it can remove,
    so the k best of what is left are among those returned; forced tokens replace the whole row. Anything
    else (penalties, n-gram bans, user processors) may lift a logit from below, and per-step scores or logits
    show every entry: None.
    """
    if plan.output_scores or plan.output_logits:
        return None
    k, bans = (1 if plan.strategy == "greedy" else None), 0
    for spec in plan.processors:
        if isinstance(spec, (P.MinLength, P.MinNewTokens)):
            bans += len(spec.eos_token_ids)
        elif isinstance(spec, P.BadWords):
            bans += len(spec.bad_words_ids)
        elif isinstance(spec, (P.ForcedBOS, P.ForcedEOS, P.Temperature)):
            continue
        elif isinstance(spec, P.TopK) and k is None:
            k = (maximum or _int_max)(spec.top_k, int(spec.min_tokens_to_keep))
        elif not (k is not None and isinstance(spec, (P.TopK, P.TopP, P.MinP))):
            return None
    return None if k is None else k + bans


def _int_max(top_k: Any, min_tokens_to_keep: int) -> int:
    return max(int(top_k), min_tokens_to_keep)


def with_every_warper(plan: DecodePlan, vocab_size: int) -> DecodePlan:
    """For a compiled loop: the plan with temperature, top-k and top-p always in its warper tail, at values
    that change nothing where the config had none (1.0, the vocabulary size, 1.0).

    A compiled loop takes warper values as arrays but is keyed by which warpers exist, so going from the
    defaults to `temperature=0.7, top_p=0.9` would compile again; with every warper present it only changes
    values. The neutral values give the same tokens: x / 1.0 == x; top-k of V keeps every token; top-p of 1.0
    removes only zero-probability tokens. Per-step scores would show that last difference, so plans with
    `output_scores` are returned unchanged, as are greedy plans and tails holding a warper twice (user
    warpers in `logits_processor`).
    """
    kinds = (P.Temperature, P.TopK, P.TopP, P.MinP)
    tail = len(plan.processors)
    while tail > 0 and isinstance(plan.processors[tail - 1], kinds):
        tail -= 1
    warpers = plan.processors[tail:]
    if plan.strategy != "sample" or plan.output_scores or len({type(w) for w in warpers}) != len(warpers):
        return plan
    found = {type(w): w for w in warpers}
    keep = next((w.min_tokens_to_keep for w in warpers if hasattr(w, "min_tokens_to_keep")), 1)
    canonical = [found.get(P.Temperature, P.Temperature(1.0)), found.get(P.TopK, P.TopK(int(vocab_size), keep)),
                 found.get(P.TopP, P.TopP(1.0, keep))] + ([found[P.MinP]] if P.MinP in found else [])  # fmt: skip
    return dataclasses.replace(plan, processors=list(plan.processors[:tail]) + canonical)


def fuse_sample(plan: DecodePlan, seeds: Sequence[int]) -> P.FusedSample:
    """Counter-based sampling for `plan` (strategy "sample"): one fused op per step, row r seeded `seeds[r]`.

    Raises:
        ValueError: the plan holds a processor the fused kernel does not implement.
    """
    fused: dict[str, Any] = {}
    for spec in plan.processors:
        if isinstance(spec, P.Temperature):
            fused["temperature"] = spec.value
        elif isinstance(spec, P.TopK):
            fused.update(top_k=spec.top_k, min_tokens_to_keep=spec.min_tokens_to_keep)
        elif isinstance(spec, P.TopP):
            fused.update(top_p=spec.top_p, min_tokens_to_keep=spec.min_tokens_to_keep)
        elif isinstance(spec, P.MinP):
            fused.update(min_p=spec.min_p, min_tokens_to_keep=spec.min_tokens_to_keep)
        elif not _fuse_common(spec, fused):
            raise ValueError(
                f"`seed=` (counter-based sampling) supports temperature, top_k, top_p, min_p, repetition_penalty, "
                f"min_length/min_new_tokens and single-token bad_words_ids; this call also needs "
                f"{type(spec).__name__}. Drop `seed` and use torch.manual_seed for transformers-compatible sampling."
            )
    return P.FusedSample(seeds=tuple(int(s) for s in seeds), **fused)


def _fuse_common(spec: Any, fused: dict[str, Any]) -> bool:
    """Fold a processor both fused ops implement into `fused`; False when it is not one of them."""
    if isinstance(spec, P.RepetitionPenalty) and "penalty" not in fused:
        fused["penalty"] = spec.penalty
    elif isinstance(spec, P.MinLength) and "min_len" not in fused:
        fused.update(min_len=spec.min_length, eos_token_ids=spec.eos_token_ids)
    elif isinstance(spec, P.MinNewTokens) and "min_len" not in fused:
        fused.update(min_len=spec.prompt_length + spec.min_new_tokens, eos_token_ids=spec.eos_token_ids)
    elif isinstance(spec, P.BadWords) and all(len(w) == 1 for w in spec.bad_words_ids) and "banned_ids" not in fused:
        fused["banned_ids"] = tuple(w[0] for w in spec.bad_words_ids)
    else:
        return False
    return True


def fuse_greedy(plan: DecodePlan) -> P.FusedArgmax | None:
    """The fused greedy selection equivalent to `plan`'s processors, or None when it has others.

    Fusable: repetition penalty, min length / min new tokens, single-token bad words (and the warpers,
    which never move the argmax). Anything else (n-gram bans, forced tokens, user processors, ...) or a
    request for per-step scores keeps the step-by-step chain.
    """
    if plan.strategy != "greedy" or plan.output_scores:
        return None
    fused: dict[str, Any] = {}
    for spec in plan.processors:
        if not getattr(spec, "argmax_invariant", False) and not _fuse_common(spec, fused):
            return None
    return P.FusedArgmax(**fused)


def _warpers(config: Any, min_keep: int) -> list[Any]:
    specs: list[Any] = []
    if config.temperature is not None and config.temperature != 1.0:
        t = config.temperature
        if not isinstance(t, (int, float)) or t <= 0:
            raise ValueError(
                f"`temperature` (={t}) has to be a strictly positive float, otherwise your next token scores will be "
                "invalid. If you're looking for greedy decoding strategies, set `do_sample=False`."
            )
        specs.append(P.Temperature(float(t)))
    if config.top_k is not None and config.top_k != 0:
        specs.append(P.TopK(int(config.top_k), min_keep))
    if config.top_p is not None and config.top_p < 1.0:
        specs.append(P.TopP(float(config.top_p), min_keep))
    if config.min_p is not None:
        specs.append(P.MinP(float(config.min_p), min_keep))
    return specs


def _check_ids(name: str, ids: Sequence[int], vocab_size: int) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"`{name}` holds token ids outside the vocabulary [0, {vocab_size}): {bad}; fix the ids.")
