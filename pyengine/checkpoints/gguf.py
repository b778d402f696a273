"""Our own GGUF reader: header, metadata, tensor infos, memory-mapped data, NumPy dequantization.

Format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), all little-endian:
    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count × (key string, value type u32, value)          string = u64 length + UTF-8 bytes
    tensor_count × (name string, n_dims u32, dims u64[n_dims], ggml type u32, offset u64)
    padding to `general.alignment` (default 32), then the tensor data; offsets are relative to it.
GGML dims are fastest-varying first, so the NumPy shape is the reversed dims.

`load_gguf_checkpoint` turns a llama-architecture file into a transformers-style LlamaConfig dict and
state dict, undoing llama.cpp's rotary permutation of the Q/K projections.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import mmap
import os
import re
import struct
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# llama.cpp's GGML_MAX_DIMS; a header asking for more is damaged, not a bigger tensor.
MAX_DIMS = 4
# Nested metadata arrays (an array of arrays of ...) deeper than this are refused, not recursed into.
MAX_ARRAY_DEPTH = 8
# Fewest bytes one metadata entry (key length, empty key, value type, 1-byte value) and one tensor info
# (name length, empty name, n_dims, type, offset) take: counts that cannot fit in the file are refused
# before any loop runs over them.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8


class GGUFValueType(enum.IntEnum):
    """Metadata value type codes."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size scalar value types → NumPy little-endian dtype.
_SCALAR_DTYPES = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


# ---------------------------------------------------------------------------------------------------
# GGML tensor types and NumPy dequantization
# ---------------------------------------------------------------------------------------------------


class GGMLType(enum.IntEnum):
    """GGML tensor type codes (ggml.h `enum ggml_type`); only some of them can be dequantized here."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35


# (elements per block, bytes per block) for the types whose layout we know.
_BLOCK_LAYOUT = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.BF16: (1, 2),
    GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (256, 256 // 16 + 256 // 4 + 2 + 2),
    GGMLType.Q3_K: (256, 256 // 8 + 256 // 4 + 12 + 2),
    GGMLType.Q4_K: (256, 2 + 2 + 12 + 256 // 2),
    GGMLType.Q5_K: (256, 2 + 2 + 12 + 256 // 8 + 256 // 2),
    GGMLType.Q6_K: (256, 256 // 2 + 256 // 4 + 256 // 16 + 2),
    GGMLType.Q8_K: (256, 4 + 256 + 256 // 8),
}


def type_name(ggml_type: int) -> str:
    """`Q4_1` for 3, or `type 99` for codes this reader does not know."""
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def nbytes_or_none(ggml_type: int, n_elements: int) -> int | None:
    """Bytes taken by `n_elements` of a type, or None when the type's layout is unknown."""
    layout = _BLOCK_LAYOUT.get(ggml_type)  # type: ignore[call-overload]
    if layout is None:
        return None
    block_elems, block_bytes = layout
    return n_elements // block_elems * block_bytes


def _f16(raw: np.ndarray) -> np.ndarray:
    """[N, 2] bytes → [N, 1] float32 (fp16 → fp32 is exact)."""
    return raw.view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[N, 16] packed bytes → [N, 32] values: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _dequant_q8_0(b: np.ndarray) -> np.ndarray:
    # block: d f16 | qs i8[32];  y = d * q
    return b[:, 2:].view(np.int8).astype(np.float32) * _f16(b[:, :2])


def _dequant_q4_0(b: np.ndarray) -> np.ndarray:
    # block: d f16 | qs u8[16] (two 4-bit values per byte);  y = d * (q - 8)
    q = _nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)
    return _f16(b[:, :2]) * q.astype(np.float32)


def _dequant_q4_1(b: np.ndarray) -> np.ndarray:
    # block: d f16 | m f16 | qs u8[16];  y = d * q + m  (multiply then add, as ggml, for exact float32)
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b[:, 2:4])


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """[N, 4] bytes holding a u32 → [N, 32] bit i of it, shifted to value 16 (the 5th bit of element i)."""
    bits = qh.view("<u4") >> np.arange(32, dtype=np.uint32)
    return ((bits & 1) << 4).astype(np.uint8)


def _dequant_q5_0(b: np.ndarray) -> np.ndarray:
    # block: d f16 | qh u32 (5th bits) | qs u8[16];  y = d * (q - 16)
    q = (_nibbles(b[:, 6:]) | _fifth_bits(b[:, 2:6])).astype(np.int8) - np.int8(16)
    return _f16(b[:, :2]) * q.astype(np.float32)


def _dequant_q5_1(b: np.ndarray) -> np.ndarray:
    # block: d f16 | m f16 | qh u32 | qs u8[16];  y = d * q + m
    q = _nibbles(b[:, 8:]) | _fifth_bits(b[:, 4:8])
    return _f16(b[:, :2]) * q.astype(np.float32) + _f16(b[:, 2:4])


def _k4_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpacks Q4_K's 12 bytes into 8 six-bit scales and 8 six-bit mins per block.

    Bytes 0-3 hold scales 0-3 (low 6 bits), bytes 4-7 mins 0-3; scales/mins 4-7 keep their low 4 bits
    in bytes 8-11 (low/high nibble) and their top 2 bits in the spare top bits of bytes 0-3 / 4-7.
    """
    lo, hi, extra = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scales = np.concatenate([lo & 0x3F, (extra & 0x0F) | ((lo >> 6) << 4)], axis=-1)
    mins = np.concatenate([hi & 0x3F, (extra >> 4) | ((hi >> 6) << 4)], axis=-1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _dequant_q4_k(b: np.ndarray) -> np.ndarray:
    # block: d f16 | dmin f16 | scales u8[12] | qs u8[128]: 8 sub-blocks of 32, y = d*sc*q - dmin*m
    n = b.shape[0]
    scales, mins = _k4_scales_mins(b[:, 4:16])
    d = (_f16(b[:, 0:2]) * scales)[:, :, None]  # [N, 8, 1]
    dm = (_f16(b[:, 2:4]) * mins)[:, :, None]
    qs = b[:, 16:].reshape(n, 4, 32)  # 4 chunks of 32 bytes; low nibbles: sub-block 2c, high: 2c+1
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    return (d * q - dm).reshape(n, 256)


def _dequant_q6_k(b: np.ndarray) -> np.ndarray:
    # block: ql u8[128] (low 4 bits) | qh u8[64] (high 2 bits) | scales i8[16] | d f16
    # Each 128-element half uses 64 ql bytes (low nibbles → elements 0-63, high → 64-127) and 32 qh
    # bytes (bit pairs 0,2,4,6 → elements 0-31, 32-63, 64-95, 96-127); element p has scale p // 16.
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 64)
    qh = b[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1)  # [N, 2, 128]
    high = (qh & 0x03).reshape(n, 2, 128)
    q = ((low | (high << 4)).astype(np.int8) - np.int8(32)).reshape(n, 16, 16).astype(np.float32)
    d = _f16(b[:, 208:210]) * b[:, 192:208].view(np.int8).astype(np.float32)  # [N, 16]
    return (d[:, :, None] * q).reshape(n, 256)


_BLOCK_DEQUANT = {
    GGMLType.Q4_0: _dequant_q4_0,
    GGMLType.Q4_1: _dequant_q4_1,
    GGMLType.Q5_0: _dequant_q5_0,
    GGMLType.Q5_1: _dequant_q5_1,
    GGMLType.Q8_0: _dequant_q8_0,
    GGMLType.Q4_K: _dequant_q4_k,
    GGMLType.Q6_K: _dequant_q6_k,
}
_FLOAT_DTYPES = {GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.F64: "<f8"}
SUPPORTED_TYPES = tuple(sorted({GGMLType.BF16, *_FLOAT_DTYPES, *_BLOCK_DEQUANT}))


def dequantize(raw: np.ndarray, ggml_type: int, *, name: str = "<tensor>") -> np.ndarray:
    """Decodes raw tensor bytes of a GGML type into a flat float32 array.

    Args:
        raw: The tensor's bytes (uint8, length a multiple of the block size).
        ggml_type: GGML type code.
        name: Tensor name, used in error messages.

    Raises:
        ValueError: The type is not supported, or `raw` is not a whole number of blocks.
    """
    if ggml_type not in SUPPORTED_TYPES:
        supported = ", ".join(GGMLType(t).name for t in SUPPORTED_TYPES)
        raise ValueError(
            f"GGUF tensor {name!r} has type {type_name(ggml_type)}, which this reader cannot dequantize "
            f"(supported: {supported}). Re-quantize the model to one of those types."
        )
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if ggml_type in _FLOAT_DTYPES:
        return raw.view(_FLOAT_DTYPES[ggml_type]).astype(np.float32)
    if ggml_type == GGMLType.BF16:
        # bf16 is the top half of a float32: widen the bits, no rounding involved.
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    _, block_bytes = _BLOCK_LAYOUT[ggml_type]
    if raw.size % block_bytes:
        raise ValueError(
            f"GGUF tensor {name!r}: {raw.size} bytes is not a whole number of {block_bytes}-byte blocks."
        )
    blocks = raw.reshape(-1, block_bytes)  # [n_blocks, block_bytes]
    return _BLOCK_DEQUANT[ggml_type](blocks).reshape(-1)


def _nbytes(ggml_type: int, n_elements: int, name: str) -> int:
    size = nbytes_or_none(ggml_type, n_elements)
    if size is None:
        dequantize(np.empty(0, np.uint8), ggml_type, name=name)  # raises the "unsupported type" error
    return size  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file.

    Attributes:
        name: GGUF tensor name, e.g. `blk.0.attn_q.weight`.
        shape: NumPy-order shape (GGML dims reversed), e.g. `(out_features, in_features)`.
        ggml_type: GGML type code (see `GGMLType`).
        offset: Byte offset of the data, relative to the start of the data section.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)


@dataclasses.dataclass
class GGUFFile:
    """A parsed GGUF file whose tensor data stays memory-mapped until `load_tensor` is called.

    Attributes:
        path: The file.
        version: GGUF format version (2 or 3).
        metadata: Key → value (ints, floats, bools, strings, or lists of them).
        tensors: Tensor name → info, in file order.
        alignment: Data alignment in bytes.
        data_offset: Absolute byte offset of the data section.
    """

    path: str
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]
    alignment: int
    data_offset: int
    _buffer: Any = dataclasses.field(repr=False, default=None)

    def raw_tensor(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view into the memory map (no copy)."""
        info = self._info(name)
        size = _nbytes(info.ggml_type, math.prod(info.shape), name)
        return np.frombuffer(self._buffer, dtype=np.uint8, count=size, offset=self.data_offset + info.offset)

    def load_tensor(self, name: str) -> np.ndarray:
        """Dequantizes one tensor to a new float32 array of NumPy-order shape.

        Raises:
            KeyError: No tensor of that name.
            ValueError: The tensor's GGML type is not supported (the message names tensor and type).
        """
        info = self._info(name)
        flat = dequantize(self.raw_tensor(name), info.ggml_type, name=name)
        return flat.reshape(info.shape)

    def _info(self, name: str) -> GGUFTensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path} has no tensor named {name!r}") from None


class _Cursor:
    """Sequential little-endian reader over the mapped file; running off the end means truncation."""

    def __init__(self, buffer: Any, path: str) -> None:
        self.buffer = buffer
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        try:
            values = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise self.truncated() from None
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.pos + length > len(self.buffer):
            raise self.truncated()
        raw = self.buffer[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self.pos + size > len(self.buffer):
            raise self.truncated()
        out = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return out

    def require(self, count: int, min_bytes: int, what: str) -> None:
        """Raises when `count` items of at least `min_bytes` each cannot fit in the rest of the file."""
        if count * min_bytes > len(self.buffer) - self.pos:
            raise ValueError(
                f"{self.path}: header claims {count} {what} but only {len(self.buffer) - self.pos} bytes are "
                "left; the file is truncated or corrupt, re-download the GGUF file."
            )

    def truncated(self) -> ValueError:
        return ValueError(
            f"{self.path} is truncated (header ends at byte {self.pos}); re-download the GGUF file."
        )


def _read_value(cur: _Cursor, value_type: int, depth: int = 0) -> Any:
    """Reads one metadata value of the given type (arrays recurse on their element type)."""
    if value_type == GGUFValueType.STRING:
        return cur.string()
    if value_type == GGUFValueType.ARRAY:
        elem_type, count = cur.unpack("<I"), cur.unpack("<Q")
        if elem_type in _SCALAR_DTYPES:
            values = cur.array(_SCALAR_DTYPES[GGUFValueType(elem_type)], count).tolist()
            return [bool(v) for v in values] if elem_type == GGUFValueType.BOOL else values
        if depth >= MAX_ARRAY_DEPTH:
            raise ValueError(f"{cur.path}: metadata arrays nested deeper than {MAX_ARRAY_DEPTH}; file is corrupt.")
        # Every string / array element takes at least 8 bytes: a count the file cannot hold is refused
        # up front rather than discovered after building millions of elements.
        cur.require(count, 8, "array elements")
        return [_read_value(cur, elem_type, depth + 1) for _ in range(count)]
    if value_type in _SCALAR_DTYPES:
        value = cur.array(_SCALAR_DTYPES[GGUFValueType(value_type)], 1)[0].item()
        return bool(value) if value_type == GGUFValueType.BOOL else value
    raise ValueError(
        f"{cur.path}: unknown GGUF metadata value type {value_type} at byte {cur.pos}; file is corrupt."
    )


def _read_preamble(cur: _Cursor) -> tuple[int, int, int]:
    """Checks magic and version; returns `(version, tensor_count, kv_count)`."""
    magic = bytes(cur.buffer[:4])
    if magic != GGUF_MAGIC:
        raise ValueError(f"{cur.path} is not a GGUF file (starts with {magic!r}, expected b'GGUF').")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        hint = " (looks big-endian; convert it to little-endian)" if version > 0xFFFF else ""
        raise ValueError(
            f"{cur.path} is GGUF version {version}{hint}; supported versions are {SUPPORTED_VERSIONS}. "
            "Re-convert the model with a recent llama.cpp `convert_hf_to_gguf.py`."
        )
    return version, cur.unpack("<Q"), cur.unpack("<Q")


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parses a GGUF file's header and memory-maps its tensor data.

    Args:
        path: The `.gguf` file.

    Returns:
        The parsed file; tensors are read lazily with `GGUFFile.load_tensor`.

    Raises:
        ValueError: Not a GGUF file, unsupported version, truncated, or a header whose counts, sizes,
            dims or alignment cannot be right (refused before anything that large is allocated).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path} is empty, not a GGUF file; re-download it.")
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(buffer, path)
    version, n_tensors, n_kv = _read_preamble(cur)
    cur.require(n_kv, _MIN_KV_BYTES, "metadata entries")
    cur.require(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensors")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = _read_value(cur, cur.unpack("<I"))
    tensors = {}
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if n_dims > MAX_DIMS:
            raise ValueError(f"{path}: tensor {name!r} claims {n_dims} dimensions (at most {MAX_DIMS}); file is corrupt.")
        dims = [int(d) for d in cur.array("<u8", n_dims)]
        ggml_type, offset = cur.unpack("<I"), cur.unpack("<Q")
        tensors[name] = GGUFTensorInfo(name, tuple(reversed(dims)), ggml_type, offset)
    alignment = _alignment(path, metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_offset = -(-cur.pos // alignment) * alignment  # round up to the alignment
    gguf = GGUFFile(path, version, metadata, tensors, alignment, data_offset, buffer)
    _check_extents(gguf, len(buffer))
    return gguf


def _alignment(path: str, value: Any) -> int:
    """`general.alignment` must be a positive integer (the spec says a power of two); 0 would divide by zero."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1):
        raise ValueError(f"{path}: general.alignment is {value!r}, not a positive power of two; file is corrupt.")
    return value


def _check_extents(gguf: GGUFFile, file_size: int) -> None:
    """Fails early, naming the tensor, when the file is too short for the data the header describes.

    Sizes are Python ints (`math.prod`), so huge dims cannot wrap around int64 into a small size.
    """
    for info in gguf.tensors.values():
        size = nbytes_or_none(info.ggml_type, math.prod(info.shape))
        if size is not None and gguf.data_offset + info.offset + size > file_size:
            raise ValueError(
                f"{gguf.path} is truncated: tensor {info.name!r} ends past the end of the file "
                f"({file_size} bytes); re-download the GGUF file."
            )


# ---------------------------------------------------------------------------------------------------
# llama architecture → transformers LlamaForCausalLM names
# ---------------------------------------------------------------------------------------------------

SUPPORTED_ARCHITECTURES = ("llama",)

_LLAMA_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LLAMA_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# rope_freqs (llama-3 rope scaling factors) is derived from the config on the HF side; transformers skips it.
_LLAMA_SKIPPED = {"rope_freqs.weight"}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(.+)")


def _llama_hf_name(name: str) -> str | None:
    """GGUF tensor name → transformers Llama name (None: tensor intentionally skipped)."""
    if name in _LLAMA_SKIPPED:
        return None
    if name in _LLAMA_GLOBAL_NAMES:
        return _LLAMA_GLOBAL_NAMES[name]
    match = _LAYER_RE.fullmatch(name)
    if match and match.group(2) in _LLAMA_LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LLAMA_LAYER_NAMES[match.group(2)]}"
    raise ValueError(
        f"GGUF tensor {name!r} has no transformers Llama equivalent; this llama variant is not supported."
    )


def llama_config_from_gguf(gguf: GGUFFile) -> dict[str, Any]:
    """Builds a transformers LlamaConfig dict from the `llama.*` and `tokenizer.ggml.*` metadata."""
    md = gguf.metadata
    num_heads = int(md["llama.attention.head_count"])
    hidden = int(md["llama.embedding_length"])
    vocab = md.get("llama.vocab_size", len(md.get("tokenizer.ggml.tokens", [])) or None)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab) if vocab is not None else None,
        "hidden_size": hidden,
        "intermediate_size": int(md["llama.feed_forward_length"]),
        "num_hidden_layers": int(md["llama.block_count"]),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(md.get("llama.attention.head_count_kv", num_heads)),
        "head_dim": int(md.get("llama.rope.dimension_count", hidden // num_heads)),
        "max_position_embeddings": int(md["llama.context_length"]),
        # Kept as the float32 value stored in the file (e.g. 9.999999747e-06), exactly as transformers does.
        "rms_norm_eps": float(md["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(md.get("llama.rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }


def reverse_rotary_permutation(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation (interleaved rotary pairs → HF's rotate-half layout).

    llama.cpp's converter regroups each head's rows `[h, 2, D/2]` as `[h, D/2, 2]`; reading the GGUF
    rows as `[h, D/2, 2]` and swapping the last two axes back restores transformers' order (the same
    operation as transformers' `LlamaTensorProcessor._reverse_permute_weights`).

    Args:
        weight: `[n_head * D, in_features]` projection weight from the GGUF file.
        n_head: Number of heads in this projection (KV heads for `attn_k`).
    """
    rows = weight.shape[0]
    half = rows // n_head // 2
    # [h*D, in] → [h, D/2, 2, in] → [h, 2, D/2, in] → [h*D, in]
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def load_gguf_config(path: str | os.PathLike | GGUFFile) -> dict[str, Any]:
    """The transformers-style config dict of a GGUF model, without dequantizing any tensor.

    Raises:
        ValueError: The architecture is not supported, or its metadata is missing or invalid.
    """
    gguf = path if isinstance(path, GGUFFile) else read_gguf(path)
    arch = gguf.metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    try:
        return llama_config_from_gguf(gguf)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(
            f"{gguf.path}: the llama metadata is missing or invalid ({type(exc).__name__}: {exc}); "
            "re-convert the model with llama.cpp's convert_hf_to_gguf.py."
        ) from exc


def load_gguf_checkpoint(path: str | os.PathLike | GGUFFile) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a GGUF model into a transformers-style config dict and a dequantized float32 state dict.

    Args:
        path: The `.gguf` file, or an already parsed `GGUFFile`.

    Returns:
        `(config, state_dict)` with LlamaForCausalLM names; `lm_head.weight` is absent when the
        embeddings are tied (`config["tie_word_embeddings"]`).

    Raises:
        ValueError: The architecture is not supported, or a tensor type cannot be dequantized.
    """
    gguf = path if isinstance(path, GGUFFile) else read_gguf(path)
    config = load_gguf_config(gguf)
    heads = {"attn_q.weight": config["num_attention_heads"], "attn_k.weight": config["num_key_value_heads"]}
    state_dict: dict[str, np.ndarray] = {}
    for name in gguf.tensors:
        hf_name = _llama_hf_name(name)
        if hf_name is None:
            continue
        weight = gguf.load_tensor(name)
        n_head = heads.get(name.split(".", 2)[-1]) if name.startswith("blk.") else None
        if n_head is not None:
            weight = reverse_rotary_permutation(weight, n_head)
        state_dict[hf_name] = weight
    return config, state_dict
