"""Load and save whole state dicts, one file or many shards, in the transformers on-disk layout.

The sharding follows huggingface_hub's `split_state_dict_into_shards_factory` (used by transformers
4.57 `save_pretrained`): tensors are taken in order, a shard is closed when the next tensor would
push it past `max_shard_size`, and a tensor larger than `max_shard_size` gets a shard of its own.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import numpy as np

from pyengine.checkpoints.resolve import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    add_variant,
)
from pyengine.checkpoints.safetensors import load_safetensors, save_safetensors
from pyengine.checkpoints.torch_bin import load_torch_bin, save_torch_bin

# Unit → bytes, as transformers' `convert_file_size_to_int` (decimal GB/MB/KB, binary GiB/MiB/KiB).
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
_SHARD_RE = re.compile(r"(.*?)-\d{5}-of-\d{5}")


def parse_size(size: int | str) -> int:
    """Converts `"5GB"` / `"100KiB"` / `1000` to bytes, with transformers' units.

    `GB`, `MB`, `KB` are powers of ten, `GiB`, `MiB`, `KiB` powers of two; a lower-case `b` suffix
    (`"5Gb"`) means bits, as in transformers.

    Raises:
        ValueError: The string is not an integer followed by a known unit.
    """
    if isinstance(size, int):
        return size
    match = _SIZE_RE.match(size)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"`max_shard_size`={size!r} is not in a valid format. Use an integer and a unit, e.g. '5GB'."
        )
    value = int(match.group(1)) * _SIZE_UNITS[unit]
    is_bits = unit in {"KB", "MB", "GB"} and match.group(2).endswith("b")
    return value // 8 if is_bits else value


def load_state_dict(files: list[str]) -> dict[str, np.ndarray]:
    """Loads and merges checkpoint files (one file or all shards) into one name → array dict.

    Args:
        files: `.safetensors` and/or `.bin` paths, e.g. from `resolve_weight_files`.

    Raises:
        ValueError: An unknown extension, or a tensor name present in two shards.
    """
    merged: dict[str, np.ndarray] = {}
    for path in files:
        if path.endswith(".safetensors"):
            part = load_safetensors(path)
        elif path.endswith((".bin", ".pt", ".pth")):
            part = load_torch_bin(path)
        else:
            raise ValueError(f"Don't know how to load {path}: expected a .safetensors or .bin file.")
        duplicated = merged.keys() & part.keys()
        if duplicated:
            raise ValueError(
                f"{path} repeats tensors already loaded from another shard: {sorted(duplicated)[:5]}"
            )
        merged.update(part)
    return merged


def _dedupe_tied(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keeps the first name of each array object passed under several names (tied weights).

    transformers drops the tied copies too (e.g. GPT-2 `lm_head.weight`), and re-ties them on load.
    Distinct arrays that merely share memory (views) are kept; they are copied when written.
    """
    seen: set[int] = set()
    out = {}
    for name, array in arrays.items():
        if id(array) in seen:
            continue
        seen.add(id(array))
        out[name] = array
    return out


def _split_shards(arrays: Mapping[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    """Greedy in-order split; a tensor bigger than `max_bytes` is placed alone in its own shard."""
    shards: list[dict[str, np.ndarray]] = []
    current: dict[str, np.ndarray] = {}
    current_size = 0
    for name, array in arrays.items():
        size = array.nbytes
        if size > max_bytes:
            shards.append({name: array})
            continue
        if current and current_size + size > max_bytes:
            shards.append(current)
            current, current_size = {}, 0
        current[name] = array
        current_size += size
    if current:
        shards.append(current)
    return shards


def _remove_stale_shards(save_directory: str, weights_name: str, keep: set[str]) -> None:
    """Deletes `model-0000i-of-0000n.*` files of an earlier save that this save does not rewrite."""
    prefix = weights_name.replace(".bin", "").replace(".safetensors", "")
    for filename in os.listdir(save_directory):
        full = os.path.join(save_directory, filename)
        stem = filename.replace(".bin", "").replace(".safetensors", "")
        if (
            filename.startswith(prefix)
            and filename not in keep
            and os.path.isfile(full)
            and _SHARD_RE.fullmatch(stem)
        ):
            os.remove(full)


def save_state_dict(
    arrays: Mapping[str, np.ndarray],
    save_directory: str | os.PathLike,
    *,
    safe_serialization: bool = True,
    max_shard_size: int | str = "5GB",
    metadata: dict[str, str] | None = None,
    variant: str | None = None,
) -> list[str]:
    """Writes a state dict the way transformers' `save_pretrained` lays it out.

    Args:
        arrays: Name → array. An array object passed under several names (tied weights) is saved once,
            under its first name.
        save_directory: Folder to write into (created if missing).
        safe_serialization: True writes `model.safetensors`, False `pytorch_model.bin`.
        max_shard_size: Largest shard, as bytes or a string like `"5GB"` (see `parse_size`).
        metadata: safetensors header metadata; default `{"format": "pt"}` (what transformers expects).
        variant: Optional variant inserted in file names (`model.fp16.safetensors`).

    Returns:
        Paths of the written weight files (the index, when sharded, is written next to them).

    Example:
        >>> save_state_dict({"w": np.zeros((2, 2), np.float32)}, "/tmp/ckpt")  # doctest: +SKIP
        ['/tmp/ckpt/model.safetensors']
    """
    save_directory = os.fspath(save_directory)
    os.makedirs(save_directory, exist_ok=True)
    arrays = _dedupe_tied(arrays)
    weights_name = add_variant(SAFE_WEIGHTS_NAME if safe_serialization else WEIGHTS_NAME, variant)
    shards = _split_shards(arrays, parse_size(max_shard_size))
    if len(shards) <= 1:
        filenames = [weights_name]
    else:
        ext = ".safetensors" if safe_serialization else ".bin"
        stem = weights_name[: -len(ext)]
        filenames = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}{ext}" for i in range(len(shards))]
    index_name = add_variant(SAFE_WEIGHTS_INDEX_NAME if safe_serialization else WEIGHTS_INDEX_NAME, variant)
    _remove_stale_shards(save_directory, weights_name, set(filenames))
    if len(shards) <= 1 and os.path.isfile(os.path.join(save_directory, index_name)):
        # An index left by an earlier sharded save would point at the shards just removed.
        os.remove(os.path.join(save_directory, index_name))
    if metadata is None:
        metadata = {"format": "pt"}
    written = []
    for filename, shard in zip(filenames, shards or [{}]):
        path = os.path.join(save_directory, filename)
        if safe_serialization:
            save_safetensors(shard, path, metadata=metadata)
        else:
            save_torch_bin(shard, path)
        written.append(path)
    if len(shards) > 1:
        _write_index(os.path.join(save_directory, index_name), filenames, shards)
    return written


def _write_index(path: str, filenames: list[str], shards: list[dict[str, np.ndarray]]) -> None:
    """Writes `*.index.json`: total byte size and which shard holds each tensor (transformers format)."""
    weight_map = {name: filename for filename, shard in zip(filenames, shards) for name in shard}
    total_size = sum(a.nbytes for shard in shards for a in shard.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
