"""Read and write `.safetensors` files as NumPy arrays.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
raw little-endian tensor bytes. We parse the header ourselves to validate the file before reading it
(a truncated download gets a clear message) and to read bfloat16, which NumPy has no dtype for.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

# The header is capped by the format spec (100 MB); a larger value means the file is not safetensors.
_MAX_HEADER_BYTES = 100_000_000


def _require_safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(
            "Reading .safetensors files needs the safetensors package: pip install safetensors"
        ) from exc
    return safetensors


def _corrupt(path: str | os.PathLike, why: str) -> OSError:
    return OSError(f"{os.fspath(path)} is truncated or not a safetensors file ({why}); re-download it.")


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parses and validates the header of a safetensors file.

    Args:
        path: The `.safetensors` file.

    Returns:
        `(header, data_start)`: the JSON header (with `__metadata__` if present) and the byte offset
        where tensor data begins.

    Raises:
        OSError: The file is truncated or is not a safetensors file.
    """
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"only {len(prefix)} bytes")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
            raise _corrupt(path, f"header claims {header_len} bytes, file has {file_size}")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(path, "header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    data_start = 8 + header_len
    data_end = max((_check_entry(path, k, v) for k, v in header.items() if k != "__metadata__"), default=0)
    metadata = header.get("__metadata__")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _corrupt(path, "__metadata__ is not a string-to-string map")
    if data_start + data_end > file_size:
        raise _corrupt(path, f"tensor data needs {data_start + data_end} bytes, file has {file_size}")
    return header, data_start


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_entry(path: str | os.PathLike, name: str, entry: Any) -> int:
    """Validates one tensor entry of the header; returns where its data ends (relative to the data start).

    The field types are checked here so that a damaged header fails with OSError instead of a KeyError or
    TypeError deep in the loader; the BF16 byte count too, because we read BF16 ourselves.
    """
    ok = isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(_is_uint(d) for d in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)
    if not ok or offsets[0] > offsets[1]:
        raise _corrupt(path, f"tensor {name!r} has no valid dtype, shape and data_offsets")
    if entry["dtype"] == "BF16" and offsets[1] - offsets[0] != 2 * math.prod(shape):
        raise _corrupt(path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes do not hold BF16{shape}")
    return offsets[1]


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Returns the free-form `__metadata__` string map of a safetensors file (`{}` if absent)."""
    header, _ = read_safetensors_header(path)
    return dict(header.get("__metadata__") or {})


def _bf16_to_f32(raw: np.ndarray, shape: list[int]) -> np.ndarray:
    """Upcasts raw bfloat16 bytes: a bf16 value is exactly the top 16 bits of the float32 value."""
    bits = raw.view("<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads every tensor of a safetensors file into NumPy arrays (bfloat16 upcast to float32).

    Args:
        path: The `.safetensors` file.

    Returns:
        Mapping from tensor name to a writable array, in file order.

    Raises:
        OSError: The file is truncated or not a safetensors file.
    """
    header, data_start = read_safetensors_header(path)
    names = [k for k in header if k != "__metadata__"]
    out: dict[str, np.ndarray] = {}
    bf16 = [n for n in names if header[n]["dtype"] == "BF16"]
    if bf16:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        for name in bf16:
            begin, end = header[name]["data_offsets"]
            out[name] = _bf16_to_f32(
                np.asarray(raw[data_start + begin : data_start + end]), header[name]["shape"]
            )
        del raw
    rest = [n for n in names if n not in out]
    if rest:
        safetensors = _require_safetensors()
        try:
            with safetensors.safe_open(os.fspath(path), framework="numpy") as f:
                for name in rest:
                    out[name] = f.get_tensor(name)
        except safetensors.SafetensorError as exc:
            raise _corrupt(path, str(exc)) from exc
    return {n: out[n] for n in names}


def save_safetensors(
    arrays: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """Writes arrays to a safetensors file.

    Args:
        arrays: Name → array. Arrays are made C-contiguous first (safetensors writes raw bytes).
        path: Destination file.
        metadata: Optional string → string map stored in the header (transformers writes `{"format": "pt"}`).
    """
    safetensors = _require_safetensors()
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    safetensors.numpy.save_file(contiguous, os.fspath(path), metadata=metadata)
