"""The PyTorch backend: array primitives for the engine and the op table for torch tensors.

The op table lists implementations in preference order; `native` (plain torch, transformers' exact
arithmetic) is always available. `cpp` (the C++ CPU kernels of `pyengine._C`, csrc/) comes first where it
exists and is available when the extension loads (`_C.available()` gives the reason when not).
`cuda` (csrc/cuda/, built with a CUDA toolkit and a CUDA torch) and `triton` (kernels/triton/) come first
for their ops; both are `quiet` (a machine without a GPU skips them without a warning) and pass tensors
they do not take (CPU tensors) on to cpp/native, so they win on CUDA tensors only.
"""

from __future__ import annotations

from typing import Any

import torch

from pyengine.backends.torch import _C, cpp, cuda, native, triton
from pyengine.ops.registry import Impl, OpTable

OP_NAMES = (
    "temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "forced_token",
    "inf_nan_remove", "hamming_diversity", "top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores",
)
# Ops with a C++ kernel; each gets `cpp` ahead of `native` (forced_token stays native: it is a fill). The
# cpp sample_from_scores consumes torch's generator exactly as torch.multinomial does (transformers' draw).
CPP_OPS = (
    "temperature", "repetition_penalty", "min_length", "no_repeat_ngram", "bad_words", "inf_nan_remove",
    "top_k_mask", "top_p_mask", "min_p_mask", "argmax", "sample_from_scores",
    # issue 4: fused selection, counter-based noise, incremental n-gram state, KV cache
    "uniform", "fused_sample", "fused_argmax", "ngram_table_init", "ngram_table_add", "ngram_ban",
    "kv_append", "kv_reorder", "kv_append_paged", "kv_gather_paged", "kv_copy_blocks", "kv_block_prepare",
)
OPS = {
    name: ([Impl("cuda", getattr(cuda, name), available=cuda.available, quiet=True)] if name in cuda.OPS else [])
    + ([Impl("triton", getattr(triton, name), available=triton.availability(name), quiet=True)] if name in triton.OPS else [])
    + ([Impl("cpp", getattr(cpp, name), available=_C.available)] if name in CPP_OPS else [])
    + [Impl("native", getattr(native, name))]
    for name in dict.fromkeys(OP_NAMES + CPP_OPS)
}


def _paged_attention_native(*args: Any) -> torch.Tensor:
    # Imported on use: the batch engine (which owns the op's spec and native path) imports this module.
    from pyengine.batch.paged_attention import paged_attention_native

    return paged_attention_native(*args)


# issue 7: attention through the batch engine's block tables (spec: pyengine/batch/paged_attention.py)
OPS["paged_attention"] = [Impl("cpp", cpp.paged_attention, available=_C.available),
                          Impl("native", _paged_attention_native)]  # fmt: skip


def beam_step_native(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, bool]:
    """`beam_step` from torch primitives: the engine's step-by-step beam bookkeeping on this backend."""
    from pyengine.engine.beam_search import beam_step_native as step  # the engine imports no framework

    return step(TorchBackend(args[0].device), *args, **kwargs)


def kv_reorder_suffix_native(caches: Any, index: torch.Tensor, start: torch.Tensor, length: int) -> None:
    """`kv_reorder_suffix` by slicing: each moved row's divergent suffix, all staged before any is written."""
    moved = [(r, i, s) for r, (i, s) in enumerate(zip(index.tolist(), start.tolist())) if i != r and s < length]
    for cache in caches:
        staged = [cache[i, :, s:length].clone() for _, i, s in moved]
        for (r, _, s), part in zip(moved, staged):
            cache[r, :, s:length] = part


# issue 4: the beam search step and beam KV reordering (spec: pyengine/ops/beam.py)
OPS["beam_step"] = [Impl("cpp", cpp.beam_step, available=_C.available), Impl("native", beam_step_native)]
OPS["kv_reorder_suffix"] = [Impl("cpp", cpp.kv_reorder_suffix, available=_C.available),
                            Impl("native", kv_reorder_suffix_native)]  # fmt: skip


class TorchBackend:
    name = "torch"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.ops = OpTable(OPS)

    def token_buffer(self, prompt: torch.Tensor, total_len: int, fill: int) -> torch.Tensor:
        buf = torch.full((prompt.shape[0], total_len), fill, dtype=torch.long, device=prompt.device)
        buf[:, : prompt.shape[1]] = prompt
        return buf

    def set_column(self, buffer: torch.Tensor, col: int, values: torch.Tensor) -> None:
        buffer[:, col] = values

    def where(self, cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    def isin(self, values: torch.Tensor, ids: list[int]) -> torch.Tensor:
        return torch.isin(values, torch.tensor(ids, device=values.device))

    def zeros_bool(self, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.bool, device=self.device)

    def logical_or(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a | b

    def all(self, x: torch.Tensor) -> bool:
        return bool(x.all())

    def to_float32(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=torch.float32, copy=True)

    def sample(self, scores: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        return self.ops.sample_from_scores(scores, rng)

    # -- beam search primitives -----------------------------------------------------------------------
    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> torch.Tensor:
        return torch.full(shape, value, dtype=_DTYPES[dtype], device=self.device)

    def copy(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def reshape(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.reshape(x, shape)

    def cast(self, x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(_DTYPES[dtype])

    def cat(self, xs: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(xs, dim=axis)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.log_softmax(x, dim=-1)

    def topk(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.topk(x, k=k)

    def take_along(self, x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
        while index.dim() < x.dim():
            index = index.unsqueeze(-1)
        return torch.take_along_dim(x, index, dim=axis)

    def sample_without_replacement(self, scores: torch.Tensor, k: int, rng: torch.Generator | None) -> torch.Tensor:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=k, generator=rng)

    def any(self, x: torch.Tensor) -> bool:
        return bool(x.any())

    def any_axis(self, x: torch.Tensor, axis: int, keepdims: bool = False) -> torch.Tensor:
        return torch.any(x, dim=axis, keepdim=keepdims)

    def all_axis(self, x: torch.Tensor, axis: int, keepdims: bool = False) -> torch.Tensor:
        return torch.all(x, dim=axis, keepdim=keepdims)

    def min_axis(self, x: torch.Tensor, axis: int, keepdims: bool = False) -> torch.Tensor:
        return torch.min(x, dim=axis, keepdim=keepdims)[0]

    def sum_axis(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        return x.sum(dim=axis)

    def max_int(self, x: torch.Tensor) -> int:
        return int(x.max())

    def to_list(self, x: torch.Tensor) -> list:
        return x.tolist()

    def asarray(self, values: list, dtype: str) -> torch.Tensor:
        return torch.tensor(values, dtype=_DTYPES[dtype], device=self.device)


_DTYPES = {"int64": torch.int64, "float32": torch.float32, "bool": torch.bool}

