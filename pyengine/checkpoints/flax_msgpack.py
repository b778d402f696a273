"""`flax_model.msgpack`: bytes on disk ↔ named NumPy arrays. Needs `msgpack` only (no jax, no flax).

The format is the one `flax.serialization.to_bytes(params)` writes and transformers 4.x saves: a msgpack
map of nested string-keyed maps whose leaves are msgpack extension objects:

    ext 1 (ndarray)   msgpack array [shape (list of ints), dtype name (bytes), raw C-order bytes]
    ext 3 (np scalar) the same payload for a 0-d array, read back as a scalar
    ext 2 (complex)   [real, imag]
A leaf larger than 2**30 bytes is split into
`{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat0, "1": flat1, ...}}`.
Sharded checkpoints (`flax_model.msgpack.index.json`) list which shard holds each "/"-joined path.

Names here are the Flax parameter paths joined with "/" (`transformer/h/0/attn/c_attn/kernel`); mapping
them to PyTorch names is the job of `models/<family>/convert.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pyengine.checkpoints.resolve import FLAX_WEIGHTS_NAME, add_variant, resolve_file

FLAX_WEIGHTS_INDEX_NAME = "flax_model.msgpack.index.json"
MAX_CHUNK_BYTES = 2**30
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_SCALAR = 1, 2, 3
_CHUNKED = "__msgpack_chunked_array__"


def _dtype(name: bytes | str) -> np.dtype:
    name = name.decode() if isinstance(name, bytes) else name
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _array_from_payload(data: bytes) -> np.ndarray:
    import msgpack

    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    return np.frombuffer(buffer, dtype=_dtype(dtype_name)).reshape(shape).copy()


def _ext_hook(code: int, data: bytes) -> Any:
    import msgpack

    if code == _EXT_NDARRAY:
        return _array_from_payload(data)
    if code == _EXT_SCALAR:
        return _array_from_payload(data)[()]
    if code == _EXT_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunk(node: dict[str, Any]) -> np.ndarray:
    shape = tuple(node["shape"][str(i)] for i in range(len(node["shape"])))
    chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
    return np.concatenate(chunks).reshape(shape)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested maps → `{"a/b/c": array}` (chunked leaves joined back)."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and _CHUNKED in value:
            out[name] = _unchunk(dict(value))
        elif isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = np.asarray(value)
    return out


def unflatten(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a/b/c": array}` → nested dicts."""
    tree: dict[str, Any] = {}
    for name, value in arrays.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def loads(data: bytes, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Decode msgpack bytes → `{"a/b/c": array}`; OSError naming `source` when they are not a Flax checkpoint."""
    import msgpack

    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as exc:
        raise OSError(f"Unable to convert {source} to Flax deserializable object: {exc}. Is it a Flax msgpack file?") from exc
    if not isinstance(tree, dict):
        raise OSError(f"{source} does not hold a map of parameters; it is not a Flax checkpoint.")
    return flatten(tree)


def load_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one `flax_model.msgpack` (or an index of shards) → `{"a/b/c": array}`."""
    path = os.fspath(path)
    if path.endswith(".index.json"):
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        folder = os.path.dirname(path)
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
                raise OSError(f"{path} lists shard {shard!r}, which is not a file inside the checkpoint folder.")
            out.update(load_flax_msgpack(os.path.join(folder, shard)))
        return out
    with open(path, "rb") as f:
        return loads(f.read(), path)


def _ext_default(obj: Any) -> Any:
    import msgpack

    if isinstance(obj, np.generic):
        return msgpack.ExtType(_EXT_SCALAR, _array_payload(np.asarray(obj)))
    if isinstance(obj, complex):
        return msgpack.ExtType(_EXT_COMPLEX, msgpack.packb((obj.real, obj.imag)))
    array = np.asarray(obj)  # np.ndarray, jax.Array
    if array.dtype.hasobject:
        raise TypeError(f"cannot serialise an array of dtype {array.dtype} to msgpack")
    return msgpack.ExtType(_EXT_NDARRAY, _array_payload(array))


def _array_payload(array: np.ndarray) -> bytes:
    import msgpack

    return msgpack.packb((list(array.shape), array.dtype.name, np.ascontiguousarray(array).tobytes()), use_bin_type=True)


def _chunk(array: np.ndarray) -> dict[str, Any]:
    per_chunk = max(1, MAX_CHUNK_BYTES // array.dtype.itemsize)
    flat = array.reshape(-1)
    chunks = [flat[i : i + per_chunk] for i in range(0, flat.size, per_chunk)]
    return {_CHUNKED: True, "shape": {str(i): d for i, d in enumerate(array.shape)},
            "chunks": {str(i): c for i, c in enumerate(chunks)}}  # fmt: skip


def dumps(arrays: Mapping[str, Any]) -> bytes:
    """`{"a/b/c": array}` (or an already nested tree) → the bytes `flax.serialization.to_bytes` writes."""
    import msgpack

    flat = flatten(arrays) if any(isinstance(v, Mapping) for v in arrays.values()) else dict(arrays)
    leaves = {}
    for name, value in flat.items():
        array = np.asarray(value)
        leaves[name] = _chunk(array) if array.nbytes > MAX_CHUNK_BYTES else array
    return msgpack.packb(unflatten(leaves), default=_ext_default, strict_types=True, use_bin_type=True)


def save_flax_msgpack(arrays: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write `arrays` (`{"a/b/c": array}` or a nested tree) to `path` in Flax's msgpack format."""
    data = dumps(arrays)
    with open(path, "wb") as f:
        f.write(data)


def load_flax_as_pt(
    path: str, options: Any, to_pt: Any, variant: str | None = None
) -> dict[str, np.ndarray]:
    """`from_flax=True` for PyTorch models: find `flax_model.msgpack` (local folder, file or Hub repo), read it,
    and rename / transpose it to PyTorch names with the family's `convert.flax_to_pt` (`to_pt`)."""
    if os.path.isfile(path):
        found = path
    else:
        found = resolve_file(path, add_variant(FLAX_WEIGHTS_NAME, variant), options, required=False)
        if found is None:
            found = resolve_file(path, add_variant(FLAX_WEIGHTS_INDEX_NAME, variant), options, required=False)
        if found is None:
            raise OSError(
                f"from_flax=True, but {path} has no {FLAX_WEIGHTS_NAME} (or {FLAX_WEIGHTS_INDEX_NAME}); drop "
                "`from_flax` to load PyTorch weights, or point at a folder saved by a Flax model."
            )
    return to_pt(load_flax_msgpack(found))
