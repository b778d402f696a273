"""FlaxGenerationMixin: transformers 4.x's Flax `generate()` on the shared engine.

This file owns the HF-compatible surface (the documented Flax signature: `prng_key`, `trace`, `params`
and the GenerationConfig arguments) and the model's part of the loop; the decoding algorithm is the
engine's, with the JAX backend:

    trace=True    the whole loop is one `jax.jit` function: prefill, then `engine.compiled.run_compiled`
                  (`lax.while_loop`) with a KV cache preallocated for max_length and written with
                  `dynamic_update_slice`. Sampling values (temperature, top_k, top_p, min_p,
                  repetition_penalty, min_length, min_new_tokens) enter as traced arrays: a new value reuses
                  the compiled function; only a new structure (another processor set, shape or strategy)
                  compiles again. `model._generate_compilations` counts compilations.
    trace=False   the engine's eager loop (`engine.loop.run`) around a jitted model step; user logits
                  processors and stopping criteria work here.
    num_beams>1   the engine's beam search (`engine.beam_search.run_beam`, NumPy bookkeeping) around a
                  jitted model step and cache reorder: beam search, beam sampling, num_return_sequences.

Both loops draw samples the same way from `prng_key` (split once per step), so trace=True and
trace=False give the same tokens. Outputs are transformers' Flax classes, `sequences` `[B, max_length]`
padded with `pad_token_id`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import numbers
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pyengine.backends.jax.backend import JaxBackend, KeyStream
from pyengine.backends.numpy.backend import NumpyBackend
from pyengine.engine import loop
from pyengine.engine import processors as P
from pyengine.engine.beam_search import run_beam
from pyengine.engine.compiled import check_compilable, run_compiled
from pyengine.engine.plan import DecodePlan, build_plan, top_logits_needed, with_every_warper
from pyengine.utils.model_output import ModelOutput

logger = logging.getLogger("pyengine")

# Numeric fields of the specs that enter the compiled function as traced values (never recompile).
TRACED_FIELDS = {
    P.Temperature: ("value",),
    P.RepetitionPenalty: ("penalty",),
    P.TopK: ("top_k",),
    P.TopP: ("top_p",),
    P.MinP: ("min_p",),
    P.MinLength: ("min_length",),
    P.MinNewTokens: ("min_new_tokens",),
}
_INT_FIELDS = {"top_k", "min_length", "min_new_tokens"}
_MODEL_KWARGS = {"attention_mask", "decoder_input_ids", "encoder_outputs"}


@dataclasses.dataclass
class FlaxGreedySearchOutput(ModelOutput):
    sequences: Any = None  # [B, max_length]
    scores: Any = None  # [B, max_length - S, V] processed scores (output_scores + return_dict_in_generate)

    def __iter__(self):  # rows of `sequences`, so `tokenizer.batch_decode(outputs)` works as in the reference
        return iter(np.asarray(self.sequences))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.sequences)
        return out.astype(dtype) if dtype is not None else out


@dataclasses.dataclass
class FlaxSampleOutput(FlaxGreedySearchOutput):
    pass


@dataclasses.dataclass
class FlaxBeamSearchOutput(FlaxGreedySearchOutput):
    sequences_scores: Any = None  # [B * num_return_sequences]: length-normalised beam scores
    beam_indices: Any = None


class FlaxGenerationMixin:
    """Adds `generate()` to the Flax models. A causal LM provides `init_cache` and `_decode_step`; an
    encoder-decoder provides `init_cache`, `_encode` and `_seq2seq_step` (see models/*/modeling_flax.py)."""

    def generate(
        self,
        input_ids: Any = None,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        decoder_start_token_id: int | None = None,
        do_sample: bool | None = None,
        prng_key: Any = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        num_beams: int | None = None,
        no_repeat_ngram_size: int | None = None,
        min_length: int | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | None = None,
        trace: bool = True,
        params: Any = None,
        generation_config: Any = None,
        logits_processor: Any = None,
        stopping_criteria: Any = None,
        **kwargs: Any,
    ) -> FlaxGreedySearchOutput:
        """Generate token ids (transformers' `FlaxGenerationMixin.generate`, plus every strategy and processor
        of the PyTorch side: beam sampling, repetition penalty, bad words, min_p, num_return_sequences, ...).

        Args:
            input_ids: prompt ids `[B, S]` (left-padded for batches); for encoder-decoder models the encoder input.
            prng_key: `jax.random.PRNGKey` for sampling (default `PRNGKey(0)`).
            trace: True compiles the whole loop with `jax.jit`; False runs a Python loop (debugging, user
                processors / stopping criteria).
            params: parameters to use instead of `model.params`.
            **kwargs: any GenerationConfig field (`max_new_tokens`, `repetition_penalty`, ...) or
                `attention_mask` / `decoder_input_ids`.

        Returns:
            `FlaxGreedySearchOutput` / `FlaxSampleOutput` / `FlaxBeamSearchOutput` with `sequences`
            `[B * num_return_sequences, max_length]`.
        """
        named = dict(max_length=max_length, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                     eos_token_id=eos_token_id, decoder_start_token_id=decoder_start_token_id, do_sample=do_sample,
                     top_k=top_k, top_p=top_p, temperature=temperature, num_beams=num_beams,
                     no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
                     forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos_token_id,
                     length_penalty=length_penalty, early_stopping=early_stopping)  # fmt: skip
        kwargs.update({k: v for k, v in named.items() if v is not None})
        config, model_kwargs = self._flax_generation_config(generation_config, kwargs)
        params = self.params if params is None else params
        prng_key = jax.random.PRNGKey(0) if prng_key is None else prng_key
        ids = self._check_generate_inputs(input_ids, config)
        eos_ids, pad_id = self._special_tokens(config, model_kwargs.get("attention_mask") is not None)
        mask = model_kwargs.get("attention_mask")
        mask = _infer_mask(ids, pad_id, eos_ids) if mask is None else jnp.asarray(mask, dtype=jnp.int32)
        if mask.shape != ids.shape:
            raise ValueError(f"`attention_mask` must have the shape of the input ids {tuple(ids.shape)}, got {tuple(mask.shape)}.")
        seq2seq = bool(getattr(self.config, "is_encoder_decoder", False))
        prompt = self._decoder_start(config, ids.shape[0], model_kwargs.get("decoder_input_ids")) if seq2seq else ids
        self._generation_lengths(config, prompt.shape[1], "max_length" in kwargs)
        if config.num_beams > 1 and config.num_return_sequences > config.num_beams:
            raise ValueError(f"`num_return_sequences` ({config.num_return_sequences}) has to be smaller or equal to "
                             f"`num_beams` ({config.num_beams}).")  # fmt: skip
        if config.num_beams == 1 and config.num_return_sequences > 1 and not config.do_sample:
            raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different than 1 "
                             f"(got {config.num_return_sequences}).")  # fmt: skip
        plan = build_plan(
            config, vocab_size=self.config.vocab_size, prompt_length=prompt.shape[1], eos_token_ids=eos_ids,
            pad_token_id=pad_id, num_beams=config.num_beams, custom_processors=_custom_specs(logits_processor),
            custom_criteria=list(stopping_criteria or []),
        )
        plan.fused_select = None  # the fused torch kernels do not exist here; the processor chain runs
        expand = max(config.num_beams, config.num_return_sequences)
        if expand > 1:
            ids, mask, prompt = (jnp.repeat(x, expand, axis=0) for x in (ids, mask, prompt))
        encoder = (ids, mask) if seq2seq else None
        if config.num_beams > 1:
            return self._generate_beam(config, plan, params, prompt, mask, encoder, prng_key)
        if trace:
            check_compilable(plan)
            sequences, scores = self._generate_compiled(plan, params, prompt, mask, encoder, prng_key)
        else:
            sequences, scores = self._generate_eager(plan, params, prompt, mask, encoder, prng_key)
        cls = FlaxSampleOutput if config.do_sample else FlaxGreedySearchOutput
        keep_scores = config.return_dict_in_generate and config.output_scores
        return cls(sequences=sequences, scores=scores if keep_scores else None)

    # -- arguments ----------------------------------------------------------------------------------------------
    def _flax_generation_config(self, generation_config: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from pyengine.generation_config import GenerationConfig

        base = generation_config or getattr(self, "generation_config", None) or GenerationConfig.from_model_config(self.config)
        config = copy.deepcopy(base)
        model_kwargs = config.update(**kwargs)
        unused = [k for k in model_kwargs if k not in _MODEL_KWARGS]
        if unused:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {unused} (note: typos in the "
                             "generate arguments will also show up in this list)")  # fmt: skip
        return config, model_kwargs

    def _check_generate_inputs(self, input_ids: Any, config: Any) -> Any:
        if input_ids is None:
            if config.bos_token_id is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            return jnp.full((1, 1), int(config.bos_token_id), dtype=jnp.int32)
        if isinstance(input_ids, (list, tuple)):
            input_ids = np.asarray(input_ids)
        if not hasattr(input_ids, "shape") or not hasattr(input_ids, "dtype"):
            raise TypeError(f"`input_ids` must be an integer array [batch, length], got {type(input_ids).__name__}.")
        if len(input_ids.shape) != 2:
            raise ValueError(f"`input_ids` must have shape [batch, length], got {tuple(input_ids.shape)}.")
        if not np.issubdtype(np.dtype(input_ids.dtype), np.integer):
            raise TypeError(f"`input_ids` must hold integer token ids, got dtype {input_ids.dtype}.")
        host = np.asarray(input_ids)
        vocab = self.config.vocab_size
        if host.size and (host.min() < 0 or host.max() >= vocab):
            bad = sorted({int(t) for t in host.reshape(-1) if t < 0 or t >= vocab})[:10]
            raise ValueError(f"`input_ids` holds token ids outside the model's vocabulary [0, {vocab}): {bad}. Check "
                             "that the tokenizer matches the model.")  # fmt: skip
        return jnp.asarray(host, dtype=jnp.int32)

    def _special_tokens(self, config: Any, has_mask: bool) -> tuple[list[int], int | None]:
        eos = config.eos_token_id
        eos_ids = [] if eos is None else _ids("eos_token_id", eos)
        pad = None if config.pad_token_id is None else _ids("pad_token_id", config.pad_token_id)[0]
        if pad is None and eos_ids:
            if not has_mask:
                logger.warning("The attention mask and the pad token id were not set. As a consequence, you may "
                               "observe unexpected behavior. Please pass your input's `attention_mask` to obtain "
                               "reliable results.")  # fmt: skip
            pad = eos_ids[0]
        return eos_ids, pad

    def _decoder_start(self, config: Any, batch: int, decoder_input_ids: Any) -> Any:
        start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
        if start is None:
            raise ValueError("`decoder_start_token_id` has to be defined for encoder-decoder generation.")
        if decoder_input_ids is not None:
            return jnp.asarray(decoder_input_ids, dtype=jnp.int32)
        return jnp.full((batch, 1), int(start), dtype=jnp.int32)

    def _generation_lengths(self, config: Any, input_len: int, explicit_max: bool) -> None:
        from pyengine.generation_config import GenerationConfig

        if config.max_new_tokens is not None:
            config.max_length = config.max_new_tokens + input_len
        elif not explicit_max and config.max_length == GenerationConfig().max_length:
            warnings.warn(f"Using the model-agnostic default `max_length` (={config.max_length}) to control the "
                          "generation length. We recommend setting `max_new_tokens`.", UserWarning, stacklevel=3)  # fmt: skip
            config.max_length = config.max_length + input_len
            max_pos = getattr(self.config, "max_position_embeddings", None)
            if max_pos is not None:
                config.max_length = min(config.max_length, max_pos)
        if config.min_new_tokens is not None:
            config.min_length = config.min_new_tokens + input_len
            config.min_new_tokens = None
        if input_len >= config.max_length:
            raise ValueError(f"Input length of input_ids is {input_len}, but `max_length` is set to {config.max_length}. "
                             "Increase `max_length` or set `max_new_tokens`.")  # fmt: skip
        max_pos = None if getattr(self.config, "is_encoder_decoder", False) else getattr(self.config, "n_positions", None)
        if max_pos is not None and config.max_length > max_pos:
            raise ValueError(f"`max_length` asks for sequences of {config.max_length} tokens, but the model has learned "
                             f"positions for {max_pos} (`n_positions`). Lower `max_new_tokens` / `max_length`.")  # fmt: skip

    # -- the model's part: prefill and one step ---------------------------------------------------------------
    def _gen_prefill(self, params: Any, prompt: Any, mask: Any, total: int, encoder: Any) -> tuple[Any, dict]:
        """Run the prompt; return the last position's logits `[B, V]` and the loop's model state."""
        batch, start = prompt.shape
        cache = self.init_cache(batch, total)
        if encoder is not None:
            enc_ids, enc_mask = encoder
            enc = self._encode(params, enc_ids, enc_mask)
            logits, cache = self._seq2seq_step(params, prompt, enc, enc_mask, cache)
            return logits[:, -1], {"cache": cache, "enc": enc, "enc_mask": enc_mask}
        full_mask = jnp.concatenate([mask, jnp.ones((batch, total - start), dtype=jnp.int32)], axis=1)
        positions = jnp.where(mask == 0, 1, jnp.cumsum(mask, axis=-1) - 1)
        logits, cache = self._decode_step(params, prompt, full_mask, positions, cache, last_only=True)
        return logits[:, -1], {"cache": cache, "mask": full_mask, "pos": positions[:, -1]}

    def _gen_step(self, params: Any, state: dict, next_tokens: Any) -> tuple[Any, dict]:
        """Feed the tokens just chosen `[B]`; return the next logits `[B, V]` and the new state."""
        tokens = jnp.asarray(next_tokens, dtype=jnp.int32)[:, None]
        if "enc" in state:
            logits, cache = self._seq2seq_step(params, tokens, state["enc"], state["enc_mask"], state["cache"])
            return logits[:, 0], {**state, "cache": cache}
        pos = state["pos"] + 1
        screened = {"screen": state["screen"], "top_logits": state["top_logits"]} if "screen" in state else {}
        logits, cache = self._decode_step(params, tokens, state["mask"], pos[:, None], state["cache"], **screened)
        return logits[:, 0], {**state, "cache": cache, "pos": pos}

    def _head_table(self, params: Any) -> Any:
        """The LM head `[V, E]` whose int8 screen decode steps may read when only the top logits count (the
        model's `_decode_step` then takes `screen` and `top_logits`); None: every step computes every logit."""
        return None

    def _screen_head(self, params: Any, plan: DecodePlan, state: dict) -> dict:
        """The loop state with the head's screen (`kernels.top_logits_screen`, built in this call from the weights
        as they are) and the width the plan needs (`top_logits_needed`, an array when top_k is a traced
        value), or `state` unchanged."""
        from pyengine.backends.jax import kernels

        width = top_logits_needed(plan, maximum=lambda top_k, keep: jnp.maximum(jnp.asarray(top_k, jnp.int32), keep))
        rows = state["mask"].shape[0]  # the batch: past TOP_LOGITS_MAX_ROWS the head takes every logit anyway
        table = None if width is None or rows > kernels.TOP_LOGITS_MAX_ROWS else self._head_table(params)
        screen = None if table is None else kernels.top_logits_screen(table)
        return state if screen is None else {**state, "screen": screen, "top_logits": jnp.asarray(width, jnp.int32)}

    def _decode_params(self, params: Any, batch: int) -> Any:
        """The parameters the compiled loop hands to every step (a model may add layouts its decode step
        reads faster, computed here once per call). Default: `params` as they are."""
        return params

    # -- trace=True: one jitted function ------------------------------------------------------------------------
    def _generate_compiled(self, plan: DecodePlan, params: Any, prompt: Any, mask: Any, encoder: Any, key: Any) -> tuple:
        plan = with_every_warper(plan, self.config.vocab_size)  # new sampling values never recompile
        structure, values = _split_values(plan)
        cache = self.__dict__.setdefault("_generate_fns", {})
        fn_key = (structure, plan.strategy, plan.max_length, plan.eos_token_ids, plan.pad_token_id,
                  plan.output_scores, encoder is not None)  # fmt: skip
        if fn_key not in cache:
            cache[fn_key] = jax.jit(self._compiled_generate_fn(plan, encoder is not None))
        enc = encoder if encoder is not None else (prompt, mask)
        sequences, scores = cache[fn_key](params, prompt, mask, enc, values, key)
        return sequences, scores

    def _compiled_generate_fn(self, plan: DecodePlan, seq2seq: bool) -> Any:
        backend = JaxBackend()

        def generate_fn(params: Any, prompt: Any, mask: Any, enc: Any, values: Any, key: Any) -> tuple:
            self.__dict__["_generate_compilations"] = self.__dict__.get("_generate_compilations", 0) + 1  # trace time
            traced = dataclasses.replace(plan, processors=_with_values(plan.processors, values))
            params = self._decode_params(params, prompt.shape[0])  # once per call, outside the loop
            first, state = self._gen_prefill(params, prompt, mask, plan.max_length, enc if seq2seq else None)
            if not seq2seq:
                state = self._screen_head(params, traced, state)  # decode steps: only the logits that count
            step = lambda st, tokens, cur: self._gen_step(params, st, tokens)  # noqa: E731
            result = run_compiled(traced, backend, prompt, first, state, step, rng=key)
            return result.sequences, result.scores

        return generate_fn

    # -- trace=False: the engine's eager loop -------------------------------------------------------------------
    def _jitted_steps(self) -> tuple[Any, Any]:
        fns = self.__dict__.get("_eager_fns")
        if fns is None:
            prefill = jax.jit(self._gen_prefill, static_argnums=(3,))
            step = jax.jit(self._gen_step)
            fns = self.__dict__["_eager_fns"] = (prefill, step)
        return fns

    def _eager_step_fn(self, params: Any, prompt: Any, mask: Any, total: int, encoder: Any, host: bool = False) -> Any:
        """The eager loops' `step_fn(history) -> logits [B, V]` (NumPy logits when `host`, for the beam loop)."""
        prefill, step = self._jitted_steps()
        holder: dict[str, Any] = {}

        def step_fn(history: Any) -> np.ndarray:
            if "state" not in holder:
                logits, holder["state"] = prefill(params, prompt, mask, total, encoder)
            else:
                logits, holder["state"] = step(params, holder["state"], history[:, -1])
            return np.asarray(logits, dtype=np.float32) if host else logits

        def reorder(index: Any) -> None:
            rows = jnp.asarray(np.asarray(index), dtype=jnp.int32)
            state = holder["state"]
            gathered = {k: (jax.tree_util.tree_map(lambda x: x[rows] if x.ndim else x, v) if k != "cache" else v)
                        for k, v in state.items()}  # fmt: skip
            cache = state["cache"]
            gathered["cache"] = {"index": cache["index"],
                                 "layers": jax.tree_util.tree_map(lambda x: x[rows], cache["layers"])}  # fmt: skip
            holder["state"] = gathered

        step_fn.reorder = reorder  # type: ignore[attr-defined]
        return step_fn

    def _generate_eager(self, plan: DecodePlan, params: Any, prompt: Any, mask: Any, encoder: Any, key: Any) -> tuple:
        step_fn = self._eager_step_fn(params, prompt, mask, plan.max_length, encoder)
        backend = JaxBackend(eager=True)
        result = loop.run(plan, step_fn, backend, np.asarray(prompt), rng=KeyStream(key))
        pad = plan.pad_token_id if plan.pad_token_id is not None else 0
        sequences = np.full((prompt.shape[0], plan.max_length), pad, dtype=np.int32)
        sequences[:, : result.sequences.shape[1]] = np.asarray(result.sequences)
        scores = None
        if plan.output_scores and result.scores:
            scores = jnp.stack([jnp.asarray(s) for s in result.scores], axis=1)
        return jnp.asarray(sequences), scores

    # -- beam search: the engine's beam loop around a jitted step -----------------------------------------------
    def _generate_beam(self, config: Any, plan: DecodePlan, params: Any, prompt: Any, mask: Any, encoder: Any,
                       key: Any) -> FlaxBeamSearchOutput:  # fmt: skip
        if config.num_beam_groups > 1:
            raise NotImplementedError("group (diverse) beam search is not available for Flax models; use the PyTorch model.")
        step_fn = self._eager_step_fn(params, prompt, mask, plan.max_length, encoder, host=True)
        seed = int(np.asarray(jax.random.randint(key, (), 0, 2**31 - 1)))
        result = run_beam(
            plan, step_fn, NumpyBackend(), np.asarray(prompt, dtype=np.int64), num_beams=config.num_beams,
            num_return_sequences=config.num_return_sequences, length_penalty=config.length_penalty,
            early_stopping=config.early_stopping, rng=np.random.default_rng(seed), reorder=step_fn.reorder,
        )
        pad = plan.pad_token_id if plan.pad_token_id is not None else 0
        out = np.full((result.sequences.shape[0], plan.max_length), pad, dtype=np.int32)
        out[:, : result.sequences.shape[1]] = result.sequences
        return FlaxBeamSearchOutput(sequences=jnp.asarray(out), sequences_scores=jnp.asarray(result.sequences_scores),
                                    beam_indices=jnp.asarray(result.beam_indices))  # fmt: skip


# -- helpers -------------------------------------------------------------------------------------------------------
def _split_values(plan: DecodePlan) -> tuple[tuple, dict[str, Any]]:
    """The plan's processors as a hashable structure (traced fields blanked) and the traced values."""
    structure, values = [], {}
    for i, spec in enumerate(plan.processors):
        fields = TRACED_FIELDS.get(type(spec), ())
        blank = dataclasses.replace(spec, **{f: None for f in fields}) if fields else spec
        structure.append(blank)
        for f in fields:
            dtype = jnp.int32 if f in _INT_FIELDS else jnp.float32
            values[f"{i}.{f}"] = jnp.asarray(getattr(spec, f), dtype=dtype)
    return tuple(structure), values


def _with_values(specs: list[Any], values: dict[str, Any]) -> list[Any]:
    out = []
    for i, spec in enumerate(specs):
        fields = TRACED_FIELDS.get(type(spec), ())
        out.append(dataclasses.replace(spec, **{f: values[f"{i}.{f}"] for f in fields}) if fields else spec)
    return out


def _custom_specs(processors: Any) -> list[Any]:
    """User processors: pyengine processor objects run as engine ops; any callable `fn(input_ids, scores)` or
    Flax-style `fn(input_ids, scores, cur_len)` is wrapped (eager loop only: pass trace=False)."""
    out = []
    for proc in processors or []:
        spec = getattr(proc, "spec", None)
        if spec is not None:
            out.append(spec)
            continue
        if not callable(proc):
            raise TypeError(f"logits processor {proc!r} is not callable")
        target = proc if inspect.isfunction(proc) or inspect.ismethod(proc) else proc.__call__
        if len(inspect.signature(target).parameters) >= 3:
            out.append(P.Custom(lambda t, s, f=proc: f(t, s, t.shape[1])))
        else:
            out.append(P.Custom(proc))
    return out


def _ids(name: str, value: Any) -> list[int]:
    items = [value] if isinstance(value, numbers.Integral) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        raise ValueError(f"`{name}` has to be an integer token id or a list of them, but is {value!r}.")
    return [int(i) for i in items]


def _infer_mask(ids: Any, pad_id: int | None, eos_ids: list[int]) -> Any:
    """transformers' rule: mask pads only when the pad id occurs and is not also an EOS id."""
    if pad_id is not None and pad_id not in eos_ids and bool(jnp.any(ids == pad_id)):
        return (ids != pad_id).astype(jnp.int32)
    return jnp.ones_like(ids, dtype=jnp.int32)
