"""The CUDA implementations (csrc/cuda/*.cu over csrc/include/pyengine/cuda/*.cuh): same signatures as native.

They exist where `pyengine._C` was built with the CUDA sources (setup.py does so with a CUDA toolkit and a
CUDA build of torch) and a CUDA device is present. They take CUDA tensors; anything else goes to the next
implementation (`cpp` when loaded, else `native`). Ops: the fused sampling step and the beam step's
top-2K (`beam_topk`, not yet an engine op: its spec is in kernels/triton/beam_search.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch

from pyengine.backends.torch import _C, cpp, native


def available() -> str | None:
    """None when the CUDA kernels are registered and a CUDA device is present, else the reason."""
    reason = _C.available()
    if reason is not None:
        return reason
    if not torch._C._dispatch_has_kernel_for_dispatch_key("pyengine::fused_sample", "CUDA"):
        return "pyengine._C was built without CUDA (needs a CUDA toolkit and a CUDA build of torch at build time)"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    _register_fakes()
    return None


def _register_fakes() -> None:
    """Output shapes of the CUDA-only op for torch.compile (fused_sample's is registered by cpp.py). Once."""
    if getattr(_register_fakes, "done", False):
        return
    _register_fakes.done = True  # type: ignore[attr-defined]
    torch.library.register_fake("pyengine::beam_topk")(
        lambda lp, bs, k2: (lp.new_empty((bs.shape[0], k2)), lp.new_empty((bs.shape[0], k2), dtype=torch.int64))
    )


def _fallback() -> ModuleType:
    return cpp if _C.available() is None else native


def _on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cuda" for t in tensors) and available() is None


def _rows(value, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-row parameter as `[B]`; a tensor keeps its device (the launcher packs host values)."""
    t = torch.as_tensor(value, dtype=dtype).reshape(-1)
    if t.numel() not in (1, batch):
        raise ValueError(f"a per-row parameter has {t.numel()} values for a batch of {batch}")
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
    """Processors + draw, `[B]` int64; spec: `pyengine.ops.fused.fused_sample`."""
    args = (cur_len, penalty, min_len, eos_token_ids, banned_ids, temperature, top_k, top_p, min_p, seed, step,
            min_tokens_to_keep)
    uncovered = min_tokens_to_keep > 1 and bool((torch.as_tensor(min_p, dtype=torch.float64) > 0).any())
    if not _on_cuda(scores, tokens) or uncovered or scores.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return _fallback().fused_sample(scores, tokens, *args)
    b = scores.shape[0]
    f64, i64 = torch.float64, torch.int64
    # per-row values stay where the caller has them (host lists: checked and packed by the launcher)
    return torch.ops.pyengine.fused_sample(
        scores.contiguous(), tokens.contiguous(), _rows(tokens.shape[1] if cur_len is None else cur_len, b, i64),
        _rows(penalty, b, f64), _rows(min_len, b, i64), [int(i) for i in eos_token_ids],
        [int(i) for i in banned_ids], _rows(temperature, b, f64), _rows(top_k, b, i64),
        _rows(top_p, b, f64), _rows(min_p, b, f64), _rows(seed, b, i64), _rows(step, b, i64),
        int(min_tokens_to_keep),
    )


def beam_topk(log_probs: torch.Tensor, beam_scores: torch.Tensor, k2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k2 best of `log_probs [B*K, V] + beam_scores [B, K]`: `(scores, flat ids)`, ties to the lower id."""
    if not _on_cuda(log_probs, beam_scores):
        from pyengine.backends.torch import triton

        return triton.beam_topk(log_probs, beam_scores, k2)
    return torch.ops.pyengine.beam_topk(log_probs.float().contiguous(), beam_scores.float().contiguous(), int(k2))


# The ops with a CUDA kernel, in the op table of backends/torch/backend.py.
OPS = ("fused_sample",)
