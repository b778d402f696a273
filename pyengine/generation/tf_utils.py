"""TFGenerationMixin: transformers' TF `generate()` on the shared engine.

Three ways one call can run, same tokens (same processors, same selection, same model arithmetic):
- compiled (the fast path, default when the plan allows it): prefill + `engine.compiled.run_compiled`
  inside one `tf.function(jit_compile=True)`. Prompt lengths are padded on the left to buckets (powers of
  two, >= 8) and sampling values (temperature, top-k, top-p, min-p) enter as tensors, so one compilation
  serves many prompts and settings. Compilations are cached per model by the plan's structure.
- eager (`jit_compile=False`, or what the compiled loop cannot run: user processors / criteria,
  `max_time`, attentions or hidden states in the output): `engine.loop.run` with the TF backend.
- beam search / beam sampling / group beam search: the engine's beam loop on the NumPy backend (host-side
  bookkeeping), around the model's prompt pass and step compiled with XLA (eager with `jit_compile=False`).
Inside a user's own `tf.function` (not executing eagerly), generate() runs the compiled loop inline.

Seeded sampling: `seed=` (an int or two ints) makes sampling reproducible in both paths (a stateless
seed in the compiled loop, `tf.random.Generator.from_seed` in the eager one).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import numbers
import warnings
from typing import Any

import numpy as np

from pyengine.engine import processors as P
from pyengine.engine.outputs import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)
from pyengine.engine.plan import build_plan, top_logits_needed, with_every_warper
from pyengine.generation_config import GenerationConfig

logger = logging.getLogger("pyengine")

# Spec fields passed into the compiled function as tensors (changing them never recompiles).
TRACED_FIELDS = {P.Temperature: "value", P.TopK: "top_k", P.TopP: "top_p", P.MinP: "min_p",
                 P.RepetitionPenalty: "penalty"}  # fmt: skip
# Specs whose result depends on the token history: left padding to a bucket would feed them pad ids the
# caller never wrote, so with these the prompt keeps its exact length.
HISTORY_SPECS = (P.RepetitionPenalty, P.NoRepeatNGram, P.BadWords)
_MODEL_KWARGS = {"attention_mask", "use_cache", "output_attentions", "output_hidden_states", "decoder_input_ids",
                 "jit_compile"}  # fmt: skip


def bucket(length: int) -> int:
    """The padded prompt length: the next power of two, at least 8."""
    return max(8, 1 << (max(length, 1) - 1).bit_length())


class TFGenerationMixin:
    """Adds `generate()` to TF models that expose `tf_prefill` / `tf_decode` (see models/*/modeling_tf.py)."""

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "tf_prefill")

    def prepare_inputs_for_generation(self, inputs: Any, **kwargs: Any) -> dict[str, Any]:
        """The forward arguments of one step (kept for API compatibility; the engine calls tf_decode)."""
        return {"input_ids": inputs, **kwargs}

    def adjust_logits_during_generation(self, logits: Any, cur_len: int = 0, max_length: int = 0,
                                        forced_bos_token_id: int | None = None,
                                        forced_eos_token_id: int | None = None, **kwargs: Any) -> Any:  # fmt: skip
        """Hook on the raw next-token logits (identity by default)."""
        return logits

    def generate(self, inputs: Any = None, generation_config: GenerationConfig | None = None,
                 logits_processor: Any = None, seed: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        """Generate token ids (transformers' `TFGenerationMixin.generate`).

        Args:
            inputs: prompt ids `[B, S]` int (left-padded for batches); also accepted as `input_ids=`. None
                starts from `bos_token_id`. Encoder-decoder models: the encoder input.
            generation_config: base parameters; keyword arguments (max_length, max_new_tokens, min_length,
                do_sample, num_beams, temperature, top_k, top_p, repetition_penalty, bad_words_ids,
                no_repeat_ngram_size, num_return_sequences, pad/bos/eos_token_id, length_penalty,
                early_stopping, forced_bos/eos_token_id, decoder_start_token_id, use_cache, ...) override it.
            logits_processor: extra user processors (runs the eager loop).
            seed: int or two ints: reproducible sampling.
            **kwargs: also `attention_mask`, `jit_compile` (pyengine: False forces the eager loop).

        Returns:
            `tf.Tensor` int32 `[B * num_return_sequences, T]`, or a `Generate*Output` with
            `return_dict_in_generate=True`.

        Example:
            >>> outputs = model.generate(input_ids, max_length=40, temperature=0.7, do_sample=True, seed=0)
        """

        if "input_ids" in kwargs:
            if inputs is not None:
                raise ValueError("`inputs` and `input_ids` were both passed; pass the prompt once.")
            inputs = kwargs.pop("input_ids")
        explicit_max = kwargs.get("max_length") is not None
        config = copy.deepcopy(generation_config or self.generation_config or GenerationConfig.from_model_config(self.config))
        model_kwargs = config.update(**kwargs)
        unknown = set(model_kwargs) - _MODEL_KWARGS
        if unknown:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {sorted(unknown)} "
                             "(note: typos in the generate arguments will also show up in this list)")  # fmt: skip
        config.validate()
        self._check_config(config)
        if not _executing_eagerly():
            return self._generate_traced(inputs, config, model_kwargs, explicit_max, logits_processor, seed)
        prompt = self._prepare_prompt(inputs, config)  # np.int32 [B, S]
        eos, pad = _special_tokens(config, model_kwargs.get("attention_mask") is not None)
        mask = self._prepare_mask(prompt, model_kwargs.get("attention_mask"), pad, eos)
        encoder = None
        if self.config.is_encoder_decoder:
            encoder = (prompt, mask)
            prompt, mask = self._decoder_start(config, prompt.shape[0], model_kwargs.get("decoder_input_ids"))
        expand = max(config.num_beams, config.num_return_sequences)
        prompt, mask = np.repeat(prompt, expand, 0), np.repeat(mask, expand, 0)
        if encoder is not None:
            encoder = (np.repeat(encoder[0], expand, 0), np.repeat(encoder[1], expand, 0))
        _prepare_lengths(self, config, prompt.shape[1], explicit_max)
        plan = build_plan(
            config, vocab_size=self.config.vocab_size, prompt_length=prompt.shape[1], eos_token_ids=eos,
            pad_token_id=pad, num_beams=config.num_beams, custom_processors=_as_specs(logits_processor),
        )  # fmt: skip
        plan.fused_select = None  # the fused greedy/sample kernels are torch ops; TF runs the processor chain
        if config.num_beams > 1:
            return self._generate_beam(config, plan, prompt, mask, encoder, seed,
                                       compiled=model_kwargs.get("jit_compile") is not False)  # fmt: skip
        if self._can_compile(config, plan, model_kwargs):
            result = self._generate_compiled(config, plan, prompt, mask, encoder, seed)
        else:
            result = self._generate_eager(config, plan, prompt, mask, encoder, seed)
        sequences, scores = result
        if not config.return_dict_in_generate:
            return sequences
        cls = GenerateEncoderDecoderOutput if self.config.is_encoder_decoder else GenerateDecoderOnlyOutput
        return cls(sequences=sequences, scores=scores if config.output_scores else None)

    def _generate_traced(self, inputs: Any, config: GenerationConfig, model_kwargs: dict, explicit_max: bool,
                         logits_processor: Any, seed: Any) -> Any:  # fmt: skip
        """generate() inside the caller's tf.function (`tf.function(model.generate, jit_compile=True)`, as
        transformers' docs do): tensors stay symbolic and the compiled loop is traced inline. Returns
        `[B * num_return_sequences, max_length]`, rows padded with the pad id after their end (the shape
        transformers' XLA generate returns). Decoder-only greedy / sampling only."""
        from pyengine.backends.tf import tf
        from pyengine.engine.compiled import check_compilable

        if inputs is None or inputs.shape.rank != 2 or inputs.shape[1] is None:
            raise ValueError("Inside tf.function, pass `input_ids` with a static [batch, length] shape.")
        if config.num_beams > 1 or self.config.is_encoder_decoder:
            raise NotImplementedError("Inside tf.function only decoder-only greedy / sampling is traced; call "
                                      "generate() eagerly for beam search and encoder-decoder models (their "
                                      "steps are compiled there).")  # fmt: skip
        eos, pad = _special_tokens(config, True)
        n = config.num_return_sequences
        prompt = tf.repeat(tf.cast(inputs, tf.int32), n, axis=0)
        mask = model_kwargs.get("attention_mask")
        mask = tf.ones_like(prompt) if mask is None else tf.repeat(tf.cast(mask, tf.int32), n, axis=0)
        _prepare_lengths(self, config, prompt.shape[1], explicit_max)
        plan = build_plan(config, vocab_size=self.config.vocab_size, prompt_length=prompt.shape[1], eos_token_ids=eos,
                          pad_token_id=pad, custom_processors=_as_specs(logits_processor))  # fmt: skip
        plan.fused_select = None
        check_compilable(plan)
        specs, values = _split_values(plan.processors)
        rng = (tf.constant(_seed_pair(seed), tf.int64) if seed is not None
               else tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64))  # fmt: skip
        sequences, _, _ = self._compiled_body(plan, specs, prompt, mask, (), [tf.constant(v) for v in values], rng)
        return sequences

    # -- argument preparation ------------------------------------------------------------------------------
    def _check_config(self, config: GenerationConfig) -> None:
        if config.num_beams > 1 and config.num_return_sequences > config.num_beams:
            raise ValueError(f"`num_return_sequences` ({config.num_return_sequences}) has to be smaller or equal to "
                             f"`num_beams` ({config.num_beams}).")  # fmt: skip
        if config.num_beams == 1 and not config.do_sample and config.num_return_sequences > 1:
            raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different "
                             f"than 1 (got {config.num_return_sequences}).")  # fmt: skip

    def _prepare_prompt(self, inputs: Any, config: GenerationConfig) -> np.ndarray:
        if inputs is None:
            if config.bos_token_id is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            return np.full((1, 1), int(config.bos_token_id), np.int32)
        array = np.asarray(inputs)
        if array.ndim != 2:
            raise ValueError(f"`input_ids` must have shape [batch, length], got {array.shape}.")
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"`input_ids` must hold integer token ids, got dtype {array.dtype}.")
        vocab = self.config.vocab_size
        if array.size and (array.min() < 0 or array.max() >= vocab):
            bad = sorted({int(t) for t in array.reshape(-1) if t < 0 or t >= vocab})[:10]
            raise ValueError(f"`input_ids` holds token ids outside the model's vocabulary [0, {vocab}): {bad}. "
                             "Check that the tokenizer matches the model.")  # fmt: skip
        return array.astype(np.int32)

    def _prepare_mask(self, prompt: np.ndarray, mask: Any, pad: int | None, eos: list[int]) -> np.ndarray:
        if mask is not None:
            mask = np.asarray(mask).astype(np.int32)
            if mask.shape != prompt.shape:
                raise ValueError(f"`attention_mask` must have the shape of the input ids {prompt.shape}, got {mask.shape}.")
            return mask
        if pad is not None and pad not in eos and (prompt == pad).any():
            return (prompt != pad).astype(np.int32)
        return np.ones_like(prompt)

    def _decoder_start(self, config: GenerationConfig, batch: int, decoder_input_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
        if start is None:
            raise ValueError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation.")
        ids = np.full((batch, 1), int(start), np.int32)
        if decoder_input_ids is not None:
            ids = np.asarray(decoder_input_ids).astype(np.int32)
            if (ids[:, 0] != start).all():
                ids = np.concatenate([np.full((batch, 1), int(start), np.int32), ids], axis=1)
        return ids, np.ones_like(ids)

    # -- the three paths ----------------------------------------------------------------------------------
    def _can_compile(self, config: GenerationConfig, plan: Any, model_kwargs: dict) -> bool:
        from pyengine.engine.compiled import check_compilable

        if model_kwargs.get("jit_compile") is False or config.output_attentions or config.output_hidden_states:
            return False
        if config.return_dict_in_generate and config.output_logits:
            return False
        try:
            check_compilable(plan)
        except ValueError:
            if model_kwargs.get("jit_compile"):
                raise
            return False
        return True

    def _start(self, prompt: Any, mask: Any, encoder: Any, max_length: int) -> tuple[Any, Any]:
        """Prefill: (logits `[B, V]` of the last prompt position, model state)."""
        if encoder is not None:
            return self.tf_prefill(encoder[0], encoder[1], prompt, max_length)
        return self.tf_prefill(prompt, _full_mask(mask, max_length), max_length)

    def _generate_eager(self, config: GenerationConfig, plan: Any, prompt: np.ndarray, mask: np.ndarray,
                        encoder: Any, seed: Any) -> tuple[Any, Any]:  # fmt: skip
        from pyengine.backends.tf import tf
        from pyengine.backends.tf.backend import TFBackend
        from pyengine.engine import loop

        step = _EagerStep(self, mask, encoder, plan.max_length)
        rng = None
        if plan.strategy == "sample":
            rng = tf.random.Generator.from_seed(_seed_pair(seed)[0]) if seed is not None else tf.random.Generator.from_non_deterministic_state()
        result = loop.run(plan, step, TFBackend(), tf.constant(prompt), rng=rng)
        return tf.convert_to_tensor(result.sequences), result.scores

    def _generate_compiled(self, config: GenerationConfig, plan: Any, prompt: np.ndarray, mask: np.ndarray,
                           encoder: Any, seed: Any) -> tuple[Any, Any]:  # fmt: skip
        from pyengine.backends.tf import tf

        length = prompt.shape[1]
        pad = plan.pad_token_id if plan.pad_token_id is not None else 0
        padded = length if encoder is not None or any(isinstance(s, HISTORY_SPECS) for s in plan.processors) else bucket(length)
        shift = padded - length
        if shift:  # left-pad to the bucket: masked positions, invisible to the model and to the length-based specs
            prompt = np.concatenate([np.full((prompt.shape[0], shift), pad, np.int32), prompt], axis=1)
            mask = np.concatenate([np.zeros((mask.shape[0], shift), np.int32), mask], axis=1)
        plan = with_every_warper(_shift_plan(plan, shift), self.config.vocab_size)  # new values never recompile
        specs, values = _split_values(plan.processors)
        key = (tuple(specs), plan.strategy, plan.max_length, plan.eos_token_ids, plan.pad_token_id, plan.output_scores,
               prompt.shape, None if encoder is None else encoder[0].shape)  # fmt: skip
        body = functools.partial(self._compiled_body, plan, specs)
        if not tf.executing_eagerly():  # inside the caller's tf.function: trace inline
            fn = body
        else:
            cache = self.__dict__.setdefault("_pyengine_compiled", {})
            if key not in cache:
                cache[key] = tf.function(body, jit_compile=True)
            fn = cache[key]
        rng = tf.constant(_seed_pair(seed), tf.int64)
        enc = () if encoder is None else tuple(tf.constant(e) for e in encoder)
        sequences, cur, scores = fn(tf.constant(prompt), tf.constant(mask), enc, [tf.constant(v) for v in values], rng)
        cur = int(cur) if tf.executing_eagerly() else cur
        sequences = sequences[:, shift:cur] if tf.executing_eagerly() else sequences[:, shift:]
        out_scores = None
        if plan.output_scores:
            steps = (cur - padded) if tf.executing_eagerly() else scores.shape[1]
            out_scores = tuple(scores[:, i] for i in range(steps))
        return sequences, out_scores

    def _compiled_body(self, plan: Any, specs: list, prompt: Any, mask: Any, encoder: tuple, values: list,
                       rng: Any) -> tuple[Any, Any, Any]:  # fmt: skip
        from pyengine.backends.tf import kernels, tf
        from pyengine.backends.tf.backend import TFBackend
        from pyengine.engine.compiled import run_compiled

        plan = dataclasses.replace(plan, processors=_join_values(specs, values))
        logits, state = self._start(prompt, mask, encoder or None, plan.max_length)
        logits = self.adjust_logits_during_generation(tf.cast(logits, tf.float32), cur_len=prompt.shape[1])
        width = top_logits_needed(plan, maximum=lambda top_k, keep: tf.maximum(tf.cast(top_k, tf.int32), keep))
        screens = prompt.shape[0] <= kernels.TOP_LOGITS_MAX_ROWS and hasattr(self, "tf_screen_head")
        if width is not None and screens and _adjusts_nothing(self):
            state = self.tf_screen_head(state, width)  # decode steps then compute only the logits that count

        def step(model_state: Any, tokens: Any, cur: Any) -> tuple[Any, Any]:
            next_logits, model_state = self.tf_decode(model_state, tokens, cur)
            return tf.cast(next_logits, tf.float32), model_state

        result = run_compiled(plan, TFBackend(), prompt, logits, state, step, rng=rng)
        scores = result.scores if result.scores is not None else tf.zeros([0])
        return result.sequences, result.length, scores

    def _generate_beam(self, config: GenerationConfig, plan: Any, prompt: np.ndarray, mask: np.ndarray,
                       encoder: Any, seed: Any, compiled: bool = True) -> Any:  # fmt: skip
        from pyengine.backends.numpy.backend import NumpyBackend
        from pyengine.backends.tf import tf
        from pyengine.engine.beam_scorer import BeamSearchScorer
        from pyengine.engine.beam_search import run_beam
        from pyengine.engine.group_beam_search import run_group_beam

        step = _EagerStep(self, mask, encoder, plan.max_length, numpy_out=True, compiled=compiled)
        backend = NumpyBackend()
        rng = np.random.default_rng(None if seed is None else _seed_pair(seed)[0])
        if config.num_beam_groups > 1:
            scorer = BeamSearchScorer(backend, prompt.shape[0] // config.num_beams, config.num_beams,
                                      config.length_penalty, config.early_stopping, config.num_return_sequences,
                                      config.num_beam_groups, config.max_length)  # fmt: skip
            result = run_group_beam(plan, step, backend, prompt.astype(np.int64), scorer, reorder=step.reorder)
        else:
            result = run_beam(plan, step, backend, prompt.astype(np.int64), num_beams=config.num_beams,
                              num_return_sequences=config.num_return_sequences, length_penalty=config.length_penalty,
                              early_stopping=config.early_stopping, rng=rng, reorder=step.reorder)  # fmt: skip
        sequences = tf.constant(np.asarray(result.sequences), tf.int32)
        if not config.return_dict_in_generate:
            return sequences
        cls = GenerateBeamEncoderDecoderOutput if self.config.is_encoder_decoder else GenerateBeamDecoderOnlyOutput
        return cls(sequences=sequences, sequences_scores=result.sequences_scores if config.output_scores else None,
                   scores=result.scores, beam_indices=result.beam_indices)  # fmt: skip


class _EagerStep:
    """The model's part of the host-side loops: token history `[B, cur]` -> next-token logits `[B, V]` float32.

    The first call runs the prompt (`tf_prefill`), later calls only the newest token (`tf_decode`).
    Beam search (`numpy_out`) gets NumPy logits and reorders the cache with `reorder`. With `compiled`, the
    prompt pass and the step are `tf.function(jit_compile=True)` functions cached on the model (one
    compilation per prompt shape, one per cache shape), so only the beam bookkeeping runs on the host.
    """

    def __init__(self, model: Any, mask: np.ndarray, encoder: Any, max_length: int, numpy_out: bool = False,
                 compiled: bool = False) -> None:  # fmt: skip
        self.model, self.mask, self.encoder, self.max_length = model, mask, encoder, max_length
        self.numpy_out = numpy_out
        self.state = None
        self.start, self.decode = model._start, functools.partial(_changed_only, model.tf_decode)
        if compiled:
            from pyengine.backends.tf import tf

            fns = model.__dict__.setdefault("_pyengine_step_fns", {})
            if not fns:
                fns["start"] = tf.function(model._start, jit_compile=True)
                fns["decode"] = tf.function(functools.partial(_changed_only, model.tf_decode), jit_compile=True)
            self.start, self.decode = fns["start"], fns["decode"]  # (the reorder's eager gather measured faster)

    def __call__(self, tokens: Any) -> Any:
        from pyengine.backends.tf import tf

        cur = tokens.shape[1]
        if self.state is None:
            prompt = tf.constant(np.asarray(tokens), tf.int32)
            logits, self.state = self.start(prompt, tf.constant(self.mask), self.encoder, self.max_length)
        else:
            last = tf.constant(np.asarray(tokens[:, -1]), tf.int32)
            logits, changed = self.decode(self.state, last, tf.constant(cur, tf.int32))
            self.state = {**self.state, **changed}
        logits = self.model.adjust_logits_during_generation(tf.cast(logits, tf.float32), cur_len=cur)
        return logits.numpy() if self.numpy_out else logits

    def reorder(self, index: Any) -> None:
        from pyengine.backends.tf import tf

        self.state = self.model.tf_reorder(self.state, tf.constant(np.asarray(index), tf.int32))


# -- helpers -------------------------------------------------------------------------------------------------
def _changed_only(decode: Any, state: dict, tokens: Any, cur: Any) -> tuple[Any, dict]:
    """`decode`'s logits and only the state entries it replaced: handing back an unchanged input (weights
    transposed for the step, hundreds of MB) from an XLA function would copy it on every call."""
    logits, new = decode(state, tokens, cur)
    return logits, {k: v for k, v in new.items() if state.get(k) is not v}


def _adjusts_nothing(model: Any) -> bool:
    """No `adjust_logits_during_generation` of the model's own, which could lift a logit from below the top."""
    return type(model).adjust_logits_during_generation is TFGenerationMixin.adjust_logits_during_generation


def _executing_eagerly() -> bool:
    from pyengine.backends.tf import tf

    return tf.executing_eagerly()


def _full_mask(mask: Any, max_length: int) -> Any:
    """`[B, max_length]`: the prompt mask, then ones for the positions generation will write."""
    from pyengine.backends.tf import tf

    mask = tf.cast(mask, tf.int32)
    return tf.concat([mask, tf.ones([tf.shape(mask)[0], max_length - mask.shape[1]], tf.int32)], axis=1)


def _special_tokens(config: GenerationConfig, has_mask: bool) -> tuple[list[int], int | None]:
    eos = config.eos_token_id
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, numbers.Integral) else [int(e) for e in eos])
    pad = config.pad_token_id
    if pad is None and eos_ids:
        if not has_mask:
            logger.warning("The attention mask and the pad token id were not set. As a consequence, you may observe "
                           "unexpected behavior. Please pass your input's `attention_mask` to obtain reliable results.")
        pad = eos_ids[0]
        logger.warning(f"Setting `pad_token_id` to `eos_token_id`:{pad} for open-end generation.")
    return eos_ids, None if pad is None else int(pad)


def _prepare_lengths(model: Any, config: GenerationConfig, input_len: int, explicit_max: bool) -> None:
    """max_new_tokens / default max_length / min_new_tokens, as the PyTorch mixin resolves them."""
    if config.max_new_tokens is not None:
        config.max_length = config.max_new_tokens + input_len
    elif not explicit_max and config.max_length == GenerationConfig().max_length:
        warnings.warn(f"Using the model-agnostic default `max_length` (={config.max_length}) to control the "
                      "generation length. We recommend setting `max_new_tokens` to control the maximum length of "
                      "the generation.", UserWarning, stacklevel=3)  # fmt: skip
        config.max_length = config.max_length + input_len
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_pos is not None and not model.config.is_encoder_decoder:
            config.max_length = min(config.max_length, max_pos)
    if config.min_new_tokens is not None:
        config.min_length = config.min_new_tokens + input_len
        config.min_new_tokens = None
    if input_len >= config.max_length:
        raise ValueError(f"Input length of input_ids is {input_len}, but `max_length` is set to {config.max_length}. "
                         "Increase `max_length` or set `max_new_tokens`.")  # fmt: skip
    max_pos = getattr(model.config, "n_positions", None)
    if max_pos is not None and config.max_length > max_pos:
        raise ValueError(f"`max_length` ({config.max_length}) exceeds the model's position table ({max_pos}); "
                         "lower max_length / max_new_tokens.")  # fmt: skip


def _as_specs(logits_processor: Any) -> list[Any]:
    """pyengine processors become engine specs (unless a subclass overrides `__call__`); any other object is
    wrapped and called as-is (eager loop only). Torch-free: the check is by qualified name."""
    out = []
    for proc in logits_processor or []:
        spec = getattr(proc, "spec", None)
        native = spec is not None and type(proc).__call__.__qualname__ == "LogitsProcessor.__call__"
        out.append(spec if native else P.Custom(proc))
    return out


def _seed_pair(seed: Any) -> list[int]:
    if seed is None:
        return [int(np.random.randint(0, 2**31 - 1)), 0]
    if isinstance(seed, numbers.Integral):
        return [int(seed), 0]
    pair = [int(s) for s in seed]
    if len(pair) != 2:
        raise ValueError(f"`seed` is an int or two ints (a stateless TF seed), got {seed!r}.")
    return pair


def _shift_plan(plan: Any, shift: int) -> Any:
    """The plan for a prompt padded on the left by `shift` positions: every absolute length moves with it."""
    if not shift:
        return plan
    specs = []
    for spec in plan.processors:
        if isinstance(spec, P.MinLength):
            spec = dataclasses.replace(spec, min_length=spec.min_length + shift)
        elif isinstance(spec, P.MinNewTokens):
            spec = dataclasses.replace(spec, prompt_length=spec.prompt_length + shift)
        elif isinstance(spec, P.ForcedEOS):
            spec = dataclasses.replace(spec, max_length=spec.max_length + shift)
        elif isinstance(spec, P.ForcedBOS):
            raise AssertionError("ForcedBOS applies to encoder-decoder models, which are never bucketed")
        specs.append(spec)
    return dataclasses.replace(plan, processors=specs, max_length=plan.max_length + shift)


def _split_values(specs: list[Any]) -> tuple[list[Any], list[Any]]:
    """Specs with their traced field zeroed (the cache key) and the values, in order."""
    keys, values = [], []
    for spec in specs:
        field = TRACED_FIELDS.get(type(spec))
        if field is not None:
            values.append(np.float32(getattr(spec, field)) if field != "top_k" else np.int32(spec.top_k))
            spec = dataclasses.replace(spec, **{field: None})
        keys.append(spec)
    return keys, values


def _join_values(specs: list[Any], values: list[Any]) -> list[Any]:
    it = iter(values)
    return [dataclasses.replace(s, **{TRACED_FIELDS[type(s)]: next(it)}) if type(s) in TRACED_FIELDS else s
            for s in specs]  # fmt: skip
