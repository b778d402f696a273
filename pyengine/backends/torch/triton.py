"""The Triton implementations (`kernels/triton/`, installed as `pyengine.kernels.triton`): same signatures as native.

Available where Triton imports and either a CUDA device exists, or `TRITON_INTERPRET=1` (Triton's CPU
interpreter, how CI tests the kernels) and the op is forced with `PYENGINE_IMPL_<OP>=triton`: the interpreter
is far too slow to be chosen automatically. The kernels run on CUDA tensors, and on CPU tensors under the
interpreter; any other input (CPU tensors without the interpreter, scores of a dtype a kernel does not
cover) goes to the next implementation (`cpp` when the extension loads, else `native`), so an engine on
the CPU of a GPU machine still gets the C++ kernels.

The kernel modules are imported on first use, never at import time: `@triton.jit` decides between the
compiler and the interpreter when a module is imported.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from types import ModuleType

import torch

from pyengine.backends.torch import _C, cpp, native
from pyengine.utils import env

_state: dict[str, object] = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _import_reason() -> str | None:
    if "import" not in _state:
        try:
            import triton  # noqa: F401

            _state["import"] = None
        except ImportError as err:
            _state["import"] = f"triton is not installed ({err}); pip install triton (a CUDA machine)"
    return _state["import"]  # type: ignore[return-value]


def availability(op: str) -> Callable[[], str | None]:
    """The `available` check of one op's triton entry (see the module docstring)."""

    def available() -> str | None:
        reason = _import_reason()
        if reason is not None:
            return reason
        if torch.cuda.is_available():
            return None
        if _interpret():
            if env.forced_impl(op) == "triton":
                return None
            return f"TRITON_INTERPRET=1 runs Triton on the CPU, for tests only: force it with PYENGINE_IMPL_{op.upper()}=triton"
        return "no CUDA device (torch.cuda.is_available() is False); set TRITON_INTERPRET=1 to run the kernels on the CPU"

    return available


def _kernels(name: str) -> ModuleType:
    return importlib.import_module(f"pyengine.kernels.triton.{name}")


def _runs(*tensors: torch.Tensor) -> bool:
    """True when the kernels can take these tensors: all on one CUDA device, or on the CPU under the interpreter."""
    devices = {t.device.type for t in tensors}
    if devices == {"cuda"}:
        return _import_reason() is None
    return devices == {"cpu"} and _interpret() and _import_reason() is None


def _fallback() -> ModuleType:
    """The implementation for inputs the kernels do not take: the C++ kernels when loaded, else native."""
    return cpp if _C.available() is None else native


_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _rows(value, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-row parameter (scalar, sequence or tensor) as a contiguous `[B]` tensor on `device`."""
    t = torch.as_tensor(value, dtype=dtype).reshape(-1).to(device)
    if t.numel() not in (1, batch):
        raise ValueError(f"a per-row parameter has {t.numel()} values for a batch of {batch}")
    return t.expand(batch).contiguous() if t.numel() == 1 else t.contiguous()


def _ids(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([int(i) for i in values], dtype=torch.int64, device=device)


def _check_scores(op: str, scores: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
    if scores.dim() != 2:
        raise ValueError(f"{op}: scores must be [batch, vocab], got shape {tuple(scores.shape)}")
    if tokens is not None and (tokens.dim() != 2 or tokens.shape[0] != scores.shape[0]):
        raise ValueError(f"{op}: tokens must be [batch, length] with batch {scores.shape[0]}, got {tuple(tokens.shape)}")
    if tokens is not None and tokens.dtype != torch.int64:
        raise ValueError(f"{op}: tokens must be int64, got {tokens.dtype}")


def _host(value) -> torch.Tensor | None:
    """A parameter's values when they live on the host (checking device values would cost a sync)."""
    if isinstance(value, torch.Tensor) and value.device.type != "cpu":
        return None
    return torch.as_tensor(value, dtype=torch.float64).reshape(-1)


def _check_params(scores, tokens, cur_len, temperature, top_p, min_p, ids: list[int]) -> None:
    """Clear errors for out-of-range sampling parameters, before any kernel reads memory with them."""
    v, t = scores.shape[1], tokens.shape[1]
    checks = (
        (temperature, lambda x: x > 0, "temperature must be > 0"),
        (top_p, lambda x: (x >= 0) & (x <= 1), "top_p must be in [0, 1]"),
        (min_p, lambda x: (x >= 0) & (x <= 1), "min_p must be in [0, 1]"),
        (cur_len, lambda x: (x >= 0) & (x <= t), f"cur_len must be in [0, {t}] (the tokens' width)"),
    )
    for value, ok, message in checks:
        host = _host(value) if value is not None else None
        if host is not None and not bool(ok(host).all()):
            raise ValueError(f"fused_sample: {message}, got {host.tolist()}")
    bad = [i for i in ids if not 0 <= int(i) < v]
    if bad:
        raise ValueError(f"fused_sample: banned / EOS ids {bad} are outside the vocabulary [0, {v})")


# --- logits processors ------------------------------------------------------------------------------------


def _processed(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids) -> torch.Tensor:
    """Penalty + bans as one kernel, `[B, V]` float32; the scores as they are when nothing applies."""
    b, dev = scores.shape[0], scores.device
    plain = isinstance(penalty, (int, float)) and penalty == 1.0 and not banned_ids
    plain = plain and (not eos_token_ids or (isinstance(min_len, int) and min_len <= 0))
    if plain:
        return scores.contiguous()
    lens = _rows(tokens.shape[1] if cur_len is None else cur_len, b, torch.int64, dev)
    return _kernels("sampling").process_logits(
        scores.contiguous(), tokens.contiguous(), lens, _rows(penalty, b, torch.float32, dev),
        _rows(min_len, b, torch.int64, dev), _ids(eos_token_ids, dev), _ids(banned_ids, dev),
    )


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    if scores.dtype != torch.float32 or not _runs(scores, tokens):
        return _fallback().repetition_penalty(scores, tokens, penalty)
    _check_scores("repetition_penalty", scores, tokens)
    return _processed(scores, tokens, None, float(penalty), 0, (), ()) if penalty != 1.0 else scores.clone()


def min_length(scores: torch.Tensor, tokens: torch.Tensor, min_len: int, eos_token_ids: Sequence[int]) -> torch.Tensor:
    if tokens.shape[1] >= min_len or scores.dtype != torch.float32 or not _runs(scores, tokens):
        return native.min_length(scores, tokens, min_len, eos_token_ids)
    _check_scores("min_length", scores, tokens)
    return _processed(scores, tokens, None, 1.0, int(min_len), list(eos_token_ids), ())


def bad_words(scores: torch.Tensor, tokens: torch.Tensor, bad_words_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    if scores.dtype not in _FLOATS or not _runs(scores, tokens):
        return _fallback().bad_words(scores, tokens, bad_words_ids)
    _check_scores("bad_words", scores, tokens)
    if any(len(w) == 0 for w in bad_words_ids):
        raise ValueError("bad_words: every banned word needs at least one token id")
    out = scores.clone()
    words = _ids([t for w in bad_words_ids for t in w], scores.device)
    lengths = [len(w) for w in bad_words_ids]
    starts = _ids([sum(lengths[:i]) for i in range(len(lengths) + 1)], scores.device)
    _kernels("penalties").bad_words(out, tokens.contiguous(), words, starts, max(lengths, default=1))
    return out


def no_repeat_ngram(scores: torch.Tensor, tokens: torch.Tensor, ngram_size: int) -> torch.Tensor:
    if tokens.shape[1] + 1 < ngram_size or scores.dtype not in _FLOATS or not _runs(scores, tokens):
        return _fallback().no_repeat_ngram(scores, tokens, ngram_size)
    _check_scores("no_repeat_ngram", scores, tokens)
    if ngram_size < 1:
        raise ValueError(f"no_repeat_ngram: ngram_size must be >= 1, got {ngram_size}")
    out = scores.clone()
    _kernels("penalties").no_repeat_ngram(out, tokens.contiguous(), int(ngram_size))
    return out


# --- selection ----------------------------------------------------------------------------------------------


def _warper_input(scores: torch.Tensor, min_tokens_to_keep: int) -> bool:
    """True when a warper kernel takes these scores: [B, V] floats the kernels run on."""
    if min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}")
    return scores.dim() == 2 and scores.dtype in _FLOATS and _runs(scores)


def top_k_mask(
    scores: torch.Tensor, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if not _warper_input(scores, min_tokens_to_keep):
        return _fallback().top_k_mask(scores, top_k, filter_value, min_tokens_to_keep)
    if top_k < 0:
        raise ValueError(f"top_k_mask: top_k must be >= 0, got {top_k}")
    return _kernels("top_k_top_p").top_k_mask(scores.contiguous(), top_k, filter_value, min_tokens_to_keep)


def top_p_mask(
    scores: torch.Tensor, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if not _warper_input(scores, min_tokens_to_keep):
        return _fallback().top_p_mask(scores, top_p, filter_value, min_tokens_to_keep)
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p_mask: top_p must be in [0, 1], got {top_p}")
    return _kernels("top_k_top_p").top_p_mask(scores.contiguous(), top_p, filter_value, min_tokens_to_keep)


def min_p_mask(
    scores: torch.Tensor, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
) -> torch.Tensor:
    if not _warper_input(scores, min_tokens_to_keep):
        return _fallback().min_p_mask(scores, min_p, filter_value, min_tokens_to_keep)
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p_mask: min_p must be in [0, 1], got {min_p}")
    return _kernels("top_k_top_p").min_p_mask(scores.contiguous(), min_p, filter_value, min_tokens_to_keep)


def argmax(scores: torch.Tensor) -> torch.Tensor:
    if scores.dim() != 2 or scores.dtype not in _FLOATS or not _runs(scores):
        return _fallback().argmax(scores)
    return _kernels("sampling").argmax(scores.contiguous())


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
    """Processors + draw, `[B]` int64; spec: `pyengine.ops.fused.fused_sample` (same tokens for the same seeds)."""
    args = (cur_len, penalty, min_len, eos_token_ids, banned_ids, temperature, top_k, top_p, min_p, seed, step,
            min_tokens_to_keep)
    min_p_rows = torch.as_tensor(min_p, dtype=torch.float64)
    uncovered = min_tokens_to_keep > 1 and bool((min_p_rows > 0).any())  # min-p's keep-fallback: not in the kernel
    if scores.dtype not in _FLOATS or not _runs(scores, tokens) or uncovered:
        return _fallback().fused_sample(scores, tokens, *args)
    _check_scores("fused_sample", scores, tokens)
    _check_params(scores, tokens, cur_len, temperature, top_p, min_p, list(eos_token_ids) + list(banned_ids))
    b, dev = scores.shape[0], scores.device
    temps = _rows(temperature, b, torch.float64, dev)
    x = _processed(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)
    return _kernels("sampling").fused_sample(
        x, temps, _rows(top_k, b, torch.int64, dev), _rows(top_p, b, torch.float64, dev),
        _rows(min_p, b, torch.float64, dev), _rows(seed, b, torch.int64, dev), _rows(step, b, torch.int64, dev),
        int(min_tokens_to_keep),
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
    if scores.dtype not in _FLOATS or not _runs(scores, tokens):
        return _fallback().fused_argmax(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)
    _check_scores("fused_argmax", scores, tokens)
    _check_params(scores, tokens, cur_len, None, None, None, list(eos_token_ids) + list(banned_ids))
    x = _processed(scores, tokens, cur_len, penalty, min_len, eos_token_ids, banned_ids)
    return _kernels("sampling").argmax(x)


def beam_topk(log_probs: torch.Tensor, beam_scores: torch.Tensor, k2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k2 best of `log_probs [B*K, V] + beam_scores [B, K]` over (beams x vocab): `(scores, flat ids)`.

    Descending, ties to the lower flat index `beam * V + token`. Not yet an engine op (no NumPy reference in
    `pyengine/ops/` yet); the spec is in `kernels/triton/beam_search.py`.
    """
    batch, beams = beam_scores.shape
    if log_probs.shape[0] != batch * beams:
        raise ValueError(f"beam_topk: log_probs has {log_probs.shape[0]} rows; expected batch {batch} x beams {beams}")
    if not 0 < k2 <= beams * log_probs.shape[1]:
        raise ValueError(f"beam_topk: k2 must be in [1, beams * vocab], got {k2}")
    if not _runs(log_probs, beam_scores):
        acc = (log_probs.float().reshape(batch, beams, -1) + beam_scores.float()[:, :, None]).reshape(batch, -1)
        return torch.topk(acc, k2)  # ties: torch's order
    return _kernels("beam_search").beam_topk(log_probs.float().contiguous(), beam_scores.float().contiguous(), int(k2))


# --- KV cache -----------------------------------------------------------------------------------------------


def kv_append(cache: torch.Tensor, values: torch.Tensor, start: int) -> None:
    # the interpreter writes into a contiguous copy of a strided CPU tensor: CPU caches must be contiguous
    strided = cache.device.type == "cpu" and not cache.is_contiguous()
    if not _runs(cache, values) or strided or cache.stride(-1) != 1 or values.stride(-1) != 1 or cache.dtype != values.dtype:
        return _fallback().kv_append(cache, values, start)
    if start < 0 or start + values.shape[2] > cache.shape[2] or values.shape[:2] != cache.shape[:2]:
        raise ValueError(f"kv_append: values {tuple(values.shape)} at {start} do not fit the cache {tuple(cache.shape)}")
    _kernels("kv_cache").kv_append(cache, values, start)


def kv_reorder(cache: torch.Tensor, index: torch.Tensor) -> None:
    if not _runs(cache, index) or not cache.is_contiguous():
        return _fallback().kv_reorder(cache, index)
    cache.copy_(_kernels("kv_cache").kv_gather_rows(cache, index.to(torch.int64).contiguous()))


def kv_append_paged(pool: torch.Tensor, block_table: torch.Tensor, values: torch.Tensor, start: int) -> None:
    strided = pool.device.type == "cpu" and not pool.is_contiguous()  # see kv_append
    if not _runs(pool, block_table, values) or strided or pool.stride(-1) != 1 or values.stride(-1) != 1:
        return _fallback().kv_append_paged(pool, block_table, values, start)
    _kernels("kv_cache").kv_append_paged(pool, block_table.to(torch.int64), values, start)


def kv_gather_paged(pool: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    if not _runs(pool, block_table) or pool.stride(-1) != 1:
        return _fallback().kv_gather_paged(pool, block_table, length)
    return _kernels("kv_cache").kv_gather_paged(pool, block_table.to(torch.int64), length)


def kv_copy_blocks(pool: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
    if not _runs(pool, src, dst) or not pool.is_contiguous():
        return _fallback().kv_copy_blocks(pool, src, dst)
    _kernels("kv_cache").kv_copy_blocks(pool, src.to(torch.int64).contiguous(), dst.to(torch.int64).contiguous())


# The ops with a Triton kernel, in the op table of backends/torch/backend.py.
OPS = (
    "repetition_penalty", "min_length", "bad_words", "no_repeat_ngram", "top_k_mask", "top_p_mask", "min_p_mask",
    "argmax", "fused_sample", "fused_argmax",
    "kv_append", "kv_reorder", "kv_append_paged", "kv_gather_paged", "kv_copy_blocks",
)
