"""Read and write PyTorch `pytorch_model.bin` state dicts as NumPy arrays.

torch is imported inside the functions: `import pyengine.checkpoints` must work without torch.
Loading always uses `weights_only=True`, so a pickle can rebuild tensors but never run code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "Reading or writing pytorch_model.bin needs PyTorch: pip install torch "
            "(or use the safetensors format, which needs no torch)."
        ) from exc
    return torch


def _to_numpy(torch: Any, tensor: Any) -> np.ndarray:
    """Detached CPU copy; bfloat16 has no NumPy dtype, so it is upcast to float32 (exact)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


# Leading bytes of the formats a `.bin` is most often confused with, for a helpful error.
_OTHER_FORMATS = {b"GGUF": "a GGUF file; load it with `gguf_file=`"}


def _corrupt(path: str | os.PathLike, why: str) -> OSError:
    return OSError(f"{os.fspath(path)} is truncated or not a PyTorch checkpoint ({why}); re-download it.")


def _check_magic(path: str | os.PathLike) -> None:
    """Fails fast on files that are clearly not `torch.save` output: a zip archive (torch >= 1.6) or a
    pickle (protocol 2+, legacy format) is expected. A safetensors file (8-byte length, then `{`) is
    named, since renaming `model.safetensors` to `.bin` is a common mistake."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return
    if head[8:9] == b"{":
        raise _corrupt(path, "it looks like a safetensors file; name it *.safetensors")
    for magic, what in _OTHER_FORMATS.items():
        if head.startswith(magic):
            raise _corrupt(path, f"it looks like {what}")
    raise _corrupt(path, f"starts with {head[:4]!r}, not a zip archive or a pickle")


def _asks_for_code(message: str) -> bool:
    """True when torch's weights_only unpickler refused a global / call (what an exploit needs), as
    opposed to tripping over bytes that are not a pickle at all ("Unsupported operand")."""
    lowered = message.lower()
    return "global" in lowered or "reduce" in lowered


def _torch_reason(exc: BaseException) -> str:
    """The line of torch's long weights_only message that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith(("Trying", "Unsupported"))]
    return (specific or lines or [type(exc).__name__])[0]


def load_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads a pickled PyTorch state dict (flat name → tensor) into NumPy arrays.

    Args:
        path: A `pytorch_model.bin`-style file written by `torch.save`.

    Returns:
        Name → array, in file order; bfloat16 tensors come back as float32.

    Raises:
        OSError: The file is corrupt, or its pickle asks for anything other than tensors
            (`weights_only=True` refuses to run code from the file).
        ValueError: The file holds something other than a flat dict of tensors.
    """
    torch = _require_torch()
    _check_magic(path)
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _asks_for_code(str(exc)):
            raise _corrupt(path, _torch_reason(exc)) from exc
        raise OSError(
            f"Refusing to load {os.fspath(path)}: its pickle is not a plain tensor state dict and loading it "
            "would execute code from the file. Only load checkpoints you trust, and prefer converting them "
            f"to safetensors. (torch said: {_torch_reason(exc)})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail anywhere in torch.load / zipfile / pickle
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{os.fspath(path)} holds a {type(state).__name__}, not a state dict of tensors.")
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{os.fspath(path)}: entry {name!r} is a {type(tensor).__name__}, not a tensor.")
        out[name] = _to_numpy(torch, tensor)
    return out


def save_torch_bin(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes arrays as a PyTorch state dict with `torch.save` (the `pytorch_model.bin` format).

    Args:
        arrays: Name → array.
        path: Destination file.
    """
    torch = _require_torch()
    # np.array(copy) gives each tensor its own writable storage (torch.from_numpy warns on read-only
    # arrays, and shared storages would be saved whole for every view).
    tensors = {name: torch.from_numpy(np.array(a, copy=True, order="C")) for name, a in arrays.items()}
    torch.save(tensors, os.fspath(path))
