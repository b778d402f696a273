"""safetensors reader/writer: round trips, bfloat16 upcast, metadata, and clear errors on bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from pyengine.checkpoints import load_safetensors, read_safetensors_metadata, save_safetensors


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": np.arange(11, dtype=np.int64),
        "i8": np.array([-3, 0, 5], dtype=np.int8),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "strided": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],  # non-contiguous view
    }


def test_round_trip_preserves_values_dtypes_and_order(tmp_path):
    arrays = _arrays()
    path = tmp_path / "model.safetensors"
    save_safetensors(arrays, path, metadata={"format": "pt"})
    loaded = load_safetensors(path)
    assert sorted(loaded) == sorted(arrays)
    for name, expected in arrays.items():
        assert loaded[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded[name], expected)
    assert read_safetensors_metadata(path) == {"format": "pt"}


def test_metadata_absent_is_empty(tmp_path):
    path = tmp_path / "x.safetensors"
    save_safetensors({"a": np.ones(2, np.float32)}, path)
    assert read_safetensors_metadata(path) == {}


def _write_raw_bf16(path, name: str, values: np.ndarray) -> None:
    """Hand-written safetensors file with a BF16 tensor (NumPy cannot produce one)."""
    bf16_bits = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    header = json.dumps(
        {name: {"dtype": "BF16", "shape": list(values.shape), "data_offsets": [0, bf16_bits.nbytes]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bf16_bits.tobytes())


def test_bf16_is_upcast_to_float32_exactly(tmp_path):
    # Values exactly representable in bf16 (8 bits of mantissa) must survive bit-for-bit.
    values = np.array([[1.0, -2.5, 0.15625], [3.0e38, -1.0e-38, 0.0]], dtype=np.float32)
    values = ((values.view(np.uint32) >> 16) << 16).view(np.float32)
    path = tmp_path / "bf16.safetensors"
    _write_raw_bf16(path, "w", values)
    loaded = load_safetensors(path)["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)


def test_bf16_written_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    tensors = {"bf": torch.randn(4, 3).to(torch.bfloat16), "f": torch.randn(2)}
    path = tmp_path / "t.safetensors"
    st_torch.save_file(tensors, str(path))
    loaded = load_safetensors(path)
    np.testing.assert_array_equal(loaded["bf"], tensors["bf"].float().numpy())
    np.testing.assert_array_equal(loaded["f"], tensors["f"].numpy())


def test_truncated_file_raises_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors({"w": np.ones((64, 64), np.float32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated or not a safetensors file.*re-download"):
        load_safetensors(path)


@pytest.mark.parametrize(
    "content", [b"", b"abc", b"<html>not found</html>" * 10, struct.pack("<Q", 20) + b"x" * 20]
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(OSError, match="not a safetensors file"):
        load_safetensors(path)
