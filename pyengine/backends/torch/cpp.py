"""The C++ CPU implementations (`torch.ops.pyengine.*`, built from csrc/): thin wrappers, same signatures.

Each wrapper keeps its op's Python signature (the native one in `native.py`), converts arguments to the
schema's types and calls the kernel. The kernels cover float32 scores on the CPU, the engine's logits;
scores of another float dtype or on another device go to the native implementation, so the op's
contract holds for every input native accepts. Everything else that is wrong (integer scores, shapes,
ids out of range) raises a RuntimeError naming the op and the argument, from TORCH_CHECKs that run
before any kernel touches memory.

The penalties take `inplace` (`pyengine/ops/logits.py`): it runs the op's `.out` overload with
out = scores, which touches only the entries it changes instead of copying `[B, V]`.

`register_fakes()` gives torch.compile the output shapes; `_C.py` calls it once the library is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pyengine.backends.torch import _C, native
from pyengine.ops import ngram as ngram_spec


class _Library:
    """`torch.ops.pyengine`, loading the extension on first use; raises with the reason when it cannot."""

    ready = False

    def __getattr__(self, name: str):
        if not _Library.ready:
            reason = _C.available()
            if reason is not None:
                raise RuntimeError(f"the pyengine C++ extension is unavailable: {reason}")
            _Library.ready = True
        return getattr(torch.ops.pyengine, name)


_ops = _Library()


def _native_only(scores: torch.Tensor) -> bool:
    """Scores the kernels do not cover but native does: other float dtypes, other devices."""
    return scores.device.type != "cpu" or (scores.dtype != torch.float32 and scores.is_floating_point())


def temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    if _native_only(scores):
        return native.temperature(scores, temperature)
    return _ops.temperature(scores, float(temperature))


def _in_place(scores: torch.Tensor, inplace: bool) -> bool:
    """`inplace=True` runs the `.out` overload with out = scores, which needs scores' own memory contiguous."""
    return inplace and scores.is_contiguous()


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float, inplace: bool = False) -> torch.Tensor:
    if _native_only(scores):
        return native.repetition_penalty(scores, tokens, penalty, inplace)
    if _in_place(scores, inplace):
        return _ops.repetition_penalty.out(scores, tokens, float(penalty), out=scores)
    return _ops.repetition_penalty(scores, tokens, float(penalty))


def min_length(
    scores: torch.Tensor, tokens: torch.Tensor, min_len: int, eos_token_ids: Sequence[int], inplace: bool = False
) -> torch.Tensor:
    if tokens.shape[1] >= min_len or _native_only(scores):  # nothing to ban: no copy, as native
        return native.min_length(scores, tokens, min_len, eos_token_ids, inplace)
    eos = [int(i) for i in eos_token_ids]
    if _in_place(scores, inplace):
        return _ops.min_length.out(scores, int(tokens.shape[1]), int(min_len), eos, out=scores)
    return _ops.min_length(scores, int(tokens.shape[1]), int(min_len), eos)


def no_repeat_ngram(scores: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    if tokens.shape[1] + 1 < ngram_size or _native_only(scores):
        return native.no_repeat_ngram(scores, tokens, ngram_size)
    return _ops.no_repeat_ngram(scores, tokens, int(ngram_size))


def bad_words(
    scores: torch.Tensor, tokens: torch.Tensor, bad_words_ids: Sequence[Sequence[int]], inplace: bool = False
) -> torch.Tensor:
    if _native_only(scores):
        return native.bad_words(scores, tokens, bad_words_ids, inplace)
    flat = [int(t) for word in bad_words_ids for t in word]
    lens = [len(word) for word in bad_words_ids]
    if _in_place(scores, inplace):
        return _ops.bad_words.out(scores, tokens, flat, lens, out=scores)
    return _ops.bad_words(scores, tokens, flat, lens)


def forced_token(scores: torch.Tensor, tokens: torch.Tensor, at_len: int, token_ids: Sequence[int]) -> torch.Tensor:
    return native.forced_token(scores, tokens, at_len, token_ids)


def inf_nan_remove(scores: torch.Tensor) -> torch.Tensor:
    if _native_only(scores):
        return native.inf_nan_remove(scores)
    return _ops.inf_nan_remove(scores)


def top_k_mask(
    scores: torch.Tensor, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if _native_only(scores):
        return native.top_k_mask(scores, top_k, filter_value, min_tokens_to_keep)
    return _ops.top_k_mask(scores, int(top_k), float(filter_value), int(min_tokens_to_keep))


def top_p_mask(
    scores: torch.Tensor, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if _native_only(scores):
        return native.top_p_mask(scores, top_p, filter_value, min_tokens_to_keep)
    return _ops.top_p_mask(scores, float(top_p), float(filter_value), int(min_tokens_to_keep))


def min_p_mask(
    scores: torch.Tensor, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if _native_only(scores):
        return native.min_p_mask(scores, min_p, filter_value, min_tokens_to_keep)
    return _ops.min_p_mask(scores, float(min_p), float(filter_value), int(min_tokens_to_keep))


def argmax(scores: torch.Tensor) -> torch.Tensor:
    if _native_only(scores):
        return native.argmax(scores)
    return _ops.argmax(scores)


def sample_from_scores(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """native's draw (`multinomial(softmax(scores))`): the same token and the same generator state after."""
    if _native_only(scores) or (generator is not None and generator.device.type != "cpu"):
        return native.sample_from_scores(scores, generator)
    return _ops.sample_from_scores(scores, generator)


def uniform(seed, step, row_key=0) -> torch.Tensor:
    """`[B]` float64 uniforms for per-row (seed, step, row_key); see `pyengine.ops.random`."""
    args = (torch.as_tensor(v, dtype=torch.int64).reshape(-1) for v in (seed, step, row_key))
    seed, step, key = (t.contiguous() for t in torch.broadcast_tensors(*args))
    return _ops.uniform(seed, step, key)


def _rows(value, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-row parameter (scalar, sequence or tensor) as a contiguous `[B]` CPU tensor."""
    t = torch.as_tensor(value, dtype=dtype, device="cpu").reshape(-1)
    return t.expand(batch).contiguous() if t.numel() == 1 else t.contiguous()


def fused_sample(
    scores: torch.Tensor,
    tokens: torch.Tensor,
    cur_len=None,
    penalty=1.0,
    min_len=0,
    eos_token_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    seed=0,
    step=0,
    min_tokens_to_keep: int = 1,
) -> torch.Tensor:
    """Processors + draw in one call, `[B]` int64; spec: `pyengine.ops.fused.fused_sample`."""
    if _native_only(scores):
        return native.fused_sample(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids,
                                   temperature, top_k, top_p, min_p, seed, step, min_tokens_to_keep)
    b = scores.shape[0]
    f64, i64 = torch.float64, torch.int64
    return _ops.fused_sample(
        scores, tokens, _rows(tokens.shape[1] if cur_len is None else cur_len, b, i64), _rows(penalty, b, f64),
        _rows(min_len, b, i64), [int(i) for i in eos_token_ids], [int(i) for i in banned_ids],
        _rows(temperature, b, f64), _rows(top_k, b, i64), _rows(top_p, b, f64), _rows(min_p, b, f64),
        _rows(seed, b, i64), _rows(step, b, i64), int(min_tokens_to_keep),
    )


def fused_argmax(
    scores: torch.Tensor,
    tokens: torch.Tensor,
    cur_len=None,
    penalty=1.0,
    min_len=0,
    eos_token_ids: Sequence[int] = (),
    banned_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Processors + argmax, `[B]` int64; spec: `pyengine.ops.fused.fused_argmax`."""
    if _native_only(scores):
        return native.fused_argmax(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)
    b = scores.shape[0]
    return _ops.fused_argmax(
        scores, tokens, _rows(tokens.shape[1] if cur_len is None else cur_len, b, torch.int64),
        _rows(penalty, b, torch.float64), _rows(min_len, b, torch.int64),
        [int(i) for i in eos_token_ids], [int(i) for i in banned_ids],
    )


def ngram_table_init(batch: int, max_len: int) -> torch.Tensor:
    """An empty `[B, 1 + 2C]` int64 table; layout in `pyengine.ops.ngram`."""
    return torch.zeros(batch, 1 + 2 * ngram_spec.capacity(max_len), dtype=torch.int64)


def ngram_table_add(table: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    """Records the history's new n-grams in `table` (in place); returns it."""
    _ops.ngram_table_add(table, tokens, int(ngram_size))
    return table


def ngram_ban(scores: torch.Tensor, table: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    return _ops.ngram_ban(scores, table, tokens, int(ngram_size))


def kv_append(cache: torch.Tensor, values: torch.Tensor, start: int) -> None:
    _ops.kv_append(cache, values, int(start))


def kv_reorder(cache: torch.Tensor, index: torch.Tensor) -> None:
    _ops.kv_reorder(cache, index)


def kv_append_paged(pool: torch.Tensor, block_table: torch.Tensor, values: torch.Tensor, start: int) -> None:
    _ops.kv_append_paged(pool, block_table, values, int(start))


def kv_gather_paged(pool: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    return _ops.kv_gather_paged(pool, block_table, int(length))


def kv_copy_blocks(pool: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    _ops.kv_copy_blocks(pool, src, dst)


def kv_block_prepare(
    block_table: torch.Tensor, index: torch.Tensor, length: int, count: int, block_size: int, num_blocks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _ops.kv_block_prepare(block_table, index, int(length), int(count), int(block_size), int(num_blocks))


_SAME_AS_SCORES = (
    "temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "inf_nan_remove",
    "top_k_mask", "top_p_mask", "min_p_mask", "ngram_ban",
)
_ONE_ID_PER_ROW = ("argmax", "sample_from_scores", "fused_sample", "fused_argmax")


def register_fakes() -> None:
    """Output shapes for torch.compile / meta tensors (the in-place ops need none). Runs once."""
    if getattr(register_fakes, "done", False):
        return
    register_fakes.done = True  # type: ignore[attr-defined]
    for name in _SAME_AS_SCORES:
        torch.library.register_fake(f"pyengine::{name}")(lambda scores, *args: torch.empty_like(scores))
    for name in _ONE_ID_PER_ROW:
        torch.library.register_fake(f"pyengine::{name}")(
            lambda scores, *args: scores.new_empty(scores.shape[:1], dtype=torch.int64)
        )
    torch.library.register_fake("pyengine::uniform")(lambda seed, step, key: seed.new_empty(seed.shape, dtype=torch.float64))
    torch.library.register_fake("pyengine::kv_gather_paged")(
        lambda pool, table, length: pool.new_empty((table.shape[0], pool.shape[1], length, pool.shape[3]))
    )


# -- decode-step kernels of the PyTorch models (references: pyengine/backends/torch/decode.py) --------------
def linear_into(out, x, weights, scales, biases, accumulate: bool = False, weight_kn: bool = False) -> None:
    _ops.linear_into(out, x, list(weights), list(scales), list(biases), bool(accumulate), bool(weight_kn))


def top_logits(out: torch.Tensor, x: torch.Tensor, screen: Any, weight: torch.Tensor, k: int) -> int:
    """`out [M, N]`: each row's top `k` logits of `x @ weight^T` (ties included), -inf elsewhere, through the int8
    `screen` of the head (decode.screen_weights, decode.top_logits_reference); returns the candidates kept."""
    return _ops.top_logits(out, x, screen.q, screen.scale, screen.slack, weight, int(k))


def top_logits_screen(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, slack) of the int8 screen of a head `[N, K]` (decode.screen_weights_reference)."""
    return _ops.top_logits_screen(weight)


def rms_norm_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    _ops.rms_norm_into(out, x, weight, float(eps))


def layer_norm_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> None:
    _ops.layer_norm_into(out, x, weight, bias, float(eps))


def decode_attention(out, qkv, key_cache, value_cache, cos, sin, positions, length: int, key_mask,
                     num_heads: int, scale: float, rows=None) -> None:  # fmt: skip
    _ops.decode_attention(out, qkv, key_cache, value_cache, cos, sin, positions, int(length), key_mask,
                          int(num_heads), float(scale), rows)


def decode_layers(x, h, qkv, attn, gate_up, norm_in, norm_post, eps: float, qkv_proj, o_proj, gate_up_proj,
                  down_proj, key_cache, value_cache, cos, sin, positions, length: int, key_mask, num_heads: int,
                  scale, rows=None, *, norm_in_bias=(), norm_post_bias=(), activation: str = "silu_mul",
                  weight_kn: bool = False, paged=None) -> None:  # fmt: skip
    """A stack of decoder layers of a decode step in one parallel region (decode.decode_layers_reference).

    `paged`: None, or `(block_table, context_lens, write_slots)` when `key_cache` / `value_cache` are the batch
    engine's pools (PagedKVCache) rather than KVCache layers.
    """
    projections = [t for proj in (qkv_proj, o_proj, gate_up_proj, down_proj) for t in proj]
    _ops.decode_layers(x, h, qkv, attn, gate_up, norm_in, norm_post, list(norm_in_bias), list(norm_post_bias),
                       float(eps), activation, bool(weight_kn), *projections, key_cache, value_cache, cos, sin,
                       positions, int(length), key_mask, int(num_heads), scale, rows,
                       *(paged if paged is not None else (None, None, None)))  # fmt: skip


def paged_attention(
    query: torch.Tensor,
    key_pool: torch.Tensor,
    value_pool: torch.Tensor,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    query_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Issue 7: attention through block tables (spec: pyengine/batch/paged_attention.py); float32 only."""
    return _ops.paged_attention(query, key_pool, value_pool, block_table, context_lens, query_lens, float(scale))


# -- issue 4: beam search step (spec: pyengine/ops/beam.py) --------------------------------------------------
def beam_step(logits: torch.Tensor, state, cur_len: int, prompt_len: int, max_length: int, *, penalty: float = 1.0,
              min_len: int = 0, eos_token_ids: Sequence[int] = (), banned_ids: Sequence[int] = (),
              length_penalty: float = 1.0, early_stopping: int = 0, stop_all: bool = False, log_softmax: bool = True,
              scores_out: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
    """One beam search step, updating `state` (`pyengine.engine.beam_search.BeamState`) in place."""
    if state.running.shape[2] != max_length:
        raise ValueError(f"beam_step: the state holds {state.running.shape[2]} positions, max_length is {max_length}")
    if _native_only(logits):
        from pyengine.backends.torch.backend import beam_step_native

        return beam_step_native(logits, state, cur_len, prompt_len, max_length, penalty=penalty, min_len=min_len,
                                eos_token_ids=eos_token_ids, banned_ids=banned_ids, length_penalty=length_penalty,
                                early_stopping=early_stopping, stop_all=stop_all, log_softmax=log_softmax,
                                scores_out=scores_out)  # fmt: skip
    s = state
    return _ops.beam_step(
        logits, s.running, s.running_scores, s.running_idx, s.sequences, s.beam_scores, s.beam_idx, s.is_finished,
        s.improvable, int(cur_len), int(prompt_len), float(penalty), int(min_len), [int(i) for i in eos_token_ids],
        [int(i) for i in banned_ids], float(length_penalty), int(early_stopping), bool(stop_all), bool(log_softmax),
        scores_out,
    )


def kv_reorder_suffix(caches: Sequence[torch.Tensor], index: torch.Tensor, start: torch.Tensor, length: int) -> None:
    """Beam KV reordering of the divergent suffixes only (spec: `pyengine.ops.beam.kv_reorder_suffix`)."""
    if any(c.device.type != "cpu" for c in caches):
        from pyengine.backends.torch.backend import kv_reorder_suffix_native

        return kv_reorder_suffix_native(caches, index, start, length)
    _ops.kv_reorder_suffix(list(caches), index, start, int(length))
