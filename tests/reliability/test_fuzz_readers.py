"""Fuzz the checkpoint readers with mutated valid files (hypothesis).

Each example takes a small valid safetensors / GGUF / torch `.bin` file, applies a few mutations (bit flips,
truncation, overwritten header integers, edited JSON header fields) and reads it back completely.
Promise: the reader returns arrays or raises OSError / ValueError (its documented errors), within a time
and memory bound, never KeyError / TypeError / IndexError / OverflowError / MemoryError / RecursionError,
never a hang. A segfault would end the test run itself. Bit flips in tensor bytes are allowed to load:
neither format carries a checksum.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import time
import tracemalloc

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyengine.checkpoints import (  # noqa: E402
    load_gguf_checkpoint,
    load_safetensors,
    load_torch_bin,
    read_gguf,
    read_safetensors_metadata,
    save_safetensors,
)

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = (OSError, ValueError)
SECONDS, MIB = 2.0, 2**20


def _safetensors_bytes() -> bytes:
    """F32, I64 and F16 tensors written by the safetensors package, plus a BF16 one (which we decode
    ourselves) appended by rewriting the header."""
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, -2], dtype=np.int64),
        "c": np.linspace(0, 1, 4).astype(np.float16),
    }
    with tempfile.TemporaryDirectory() as folder:
        save_safetensors(arrays, os.path.join(folder, "seed.safetensors"), metadata={"format": "pt"})
        data = open(os.path.join(folder, "seed.safetensors"), "rb").read()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    header["d"] = {"dtype": "BF16", "shape": [2], "data_offsets": [end, end + 4]}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + header_len :] + b"\x80\x3f\x00\x40"


# A tiny llama GGUF: kv pairs then 3 tensors (F32, F16, Q8_0), written by hand so offsets are known.
def _gguf_bytes() -> bytes:
    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    kvs = [
        ("general.architecture", 8, string("llama")),
        ("llama.attention.head_count", 4, struct.pack("<I", 1)),
        ("llama.embedding_length", 4, struct.pack("<I", 32)),
        ("llama.feed_forward_length", 4, struct.pack("<I", 8)),
        ("llama.block_count", 4, struct.pack("<I", 1)),
        ("llama.context_length", 4, struct.pack("<I", 16)),
        ("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
        ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + string("a") + string("b")),
        ("general.alignment", 4, struct.pack("<I", 32)),
    ]
    q8 = np.zeros((32, 34), np.uint8)  # 32 rows of one Q8_0 block: d = 0.5, q = 0..31
    q8[:, :2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    q8[:, 2:] = np.arange(32, dtype=np.int8).view(np.uint8)
    tensors = [  # name, GGML dims (fastest first), type, bytes
        ("token_embd.weight", [32, 2], 0, np.ones(64, np.float32).tobytes()),
        ("output_norm.weight", [32], 1, np.ones(32, np.float16).tobytes()),
        ("blk.0.attn_q.weight", [32, 32], 8, q8.tobytes()),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += string(key) + struct.pack("<I", vtype) + value
    offset, data = 0, b""
    for name, dims, gtype, raw in tensors:
        out += string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", gtype, offset)
        data += raw + b"\0" * (-len(raw) % 32)
        offset = len(data)
    return out + b"\0" * (-len(out) % 32) + data


def _torch_bin_bytes() -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32), "b": torch.ones(2, dtype=torch.bfloat16)}, buffer)
    return buffer.getvalue()


SEEDS = {"safetensors": _safetensors_bytes(), "gguf": _gguf_bytes()}


def _integers_of_interest() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 300),
        st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]),
        st.integers(0, 2**64 - 1),
    )


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, header_end: int) -> bytes:
    """1-4 mutations: bit flip (anywhere, mostly in the header), a u32/u64 overwritten in the header,
    a truncation, or bytes inserted."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "u64", "u32", "truncate", "insert"]))
        if not data:
            break
        limit = min(header_end, len(data)) if draw(st.booleans()) else len(data)
        pos = draw(st.integers(0, max(limit - 1, 0)))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind in ("u64", "u32"):
            fmt, size = ("<Q", 8) if kind == "u64" else ("<I", 4)
            value = draw(_integers_of_interest()) % (2 ** (8 * size))
            data[pos : pos + size] = struct.pack(fmt, value)[: len(data) - pos]
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def safetensors_header_edits(draw: st.DrawFn) -> bytes:
    """The seed file with one JSON header field replaced by an odd value (valid JSON, wrong content)."""
    seed = SEEDS["safetensors"]
    header_len = struct.unpack("<Q", seed[:8])[0]
    header = json.loads(seed[8 : 8 + header_len])
    name = draw(st.sampled_from(sorted(header)))
    odd = st.one_of(
        st.none(), st.booleans(), _integers_of_interest(), st.integers(-(2**63), -1), st.floats(), st.text(max_size=5),
        st.lists(st.one_of(_integers_of_interest(), st.integers(-5, -1), st.text(max_size=2)), max_size=4),
        st.sampled_from(["F32", "BF16", "I64", "F16", "U8", "X9"]), st.dictionaries(st.text(max_size=3), st.integers()),
    )  # fmt: skip
    if name == "__metadata__" or draw(st.booleans()):
        header[name] = draw(odd)
    else:
        header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(odd)
    raw = json.dumps(header).encode()
    declared = len(raw) + draw(st.sampled_from([0, 0, 0, -1, 1, 2**40]))
    return struct.pack("<Q", max(declared, 0)) + raw + seed[8 + header_len :]


def _read_fully(fmt: str, path: str) -> None:
    if fmt == "safetensors":
        read_safetensors_metadata(path)
        arrays = load_safetensors(path)
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
    elif fmt == "gguf":
        gguf = read_gguf(path)
        for name in gguf.tensors:
            gguf.load_tensor(name)
        load_gguf_checkpoint(gguf)
    else:
        load_torch_bin(path)


def _check(fmt: str, data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = str(tmp_path_factory.getbasetemp() / f"fuzz.{fmt}")
    with open(path, "wb") as f:
        f.write(data)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        _read_fully(fmt, path)
    except ALLOWED:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS, f"{fmt}: {elapsed:.1f}s for {len(data)} bytes"
    assert peak < 64 * MIB, f"{fmt}: {peak / MIB:.0f} MiB allocated for {len(data)} bytes"


def _header_end(fmt: str) -> int:
    seed = SEEDS[fmt]
    return 8 + struct.unpack("<Q", seed[:8])[0] if fmt == "safetensors" else len(seed) - 256


def test_seeds_are_valid(tmp_path_factory):
    for fmt in SEEDS:
        path = str(tmp_path_factory.getbasetemp() / f"seed.{fmt}")
        open(path, "wb").write(SEEDS[fmt])
        _read_fully(fmt, path)
    config, state = load_gguf_checkpoint(read_gguf(path))
    assert config["hidden_size"] == 32 and set(state) == {
        "model.embed_tokens.weight", "model.norm.weight", "model.layers.0.self_attn.q_proj.weight"
    }  # fmt: skip


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_bytes(data, tmp_path_factory):
    _check(
        "safetensors", data.draw(mutated(SEEDS["safetensors"], _header_end("safetensors"))), tmp_path_factory
    )


@FUZZ
@given(data=safetensors_header_edits())
def test_fuzz_safetensors_header_fields(data, tmp_path_factory):
    _check("safetensors", data, tmp_path_factory)


@FUZZ
@given(data=st.data())
def test_fuzz_gguf_bytes(data, tmp_path_factory):
    _check("gguf", data.draw(mutated(SEEDS["gguf"], _header_end("gguf"))), tmp_path_factory)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_torch_bin_bytes(data, tmp_path_factory):
    seed = _torch_bin_bytes()
    _check("bin", data.draw(mutated(seed, len(seed))), tmp_path_factory)
