"""pytorch_model.bin reader/writer: round trips, bf16, and refusal to run code from a pickle."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pyengine.checkpoints import load_torch_bin, save_torch_bin

torch = pytest.importorskip("torch")


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": np.arange(5, dtype=np.int64),
        "c": rng.standard_normal(6).astype(np.float16),
    }
    save_torch_bin(arrays, tmp_path / "pytorch_model.bin")
    loaded = load_torch_bin(tmp_path / "pytorch_model.bin")
    assert list(loaded) == list(arrays)
    for name, expected in arrays.items():
        assert loaded[name].dtype == expected.dtype
        np.testing.assert_array_equal(loaded[name], expected)


def test_bf16_becomes_float32(tmp_path):
    tensor = torch.randn(3, 4).to(torch.bfloat16)
    torch.save({"w": tensor}, tmp_path / "x.bin")
    loaded = load_torch_bin(tmp_path / "x.bin")["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, tensor.float().numpy())


class _Exploit:
    """Unpickling this would call os.system: exactly what weights_only=True must refuse."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "evil": _Exploit(str(marker))}, tmp_path / "evil.bin")
    with pytest.raises(OSError, match="Refusing to load.*execute code"):
        load_torch_bin(tmp_path / "evil.bin")
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="not a state dict"):
        load_torch_bin(tmp_path / "list.bin")


def test_truncated_file(tmp_path):
    torch.save({"w": torch.zeros(1000)}, tmp_path / "x.bin")
    data = (tmp_path / "x.bin").read_bytes()
    (tmp_path / "x.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        load_torch_bin(tmp_path / "x.bin")


def test_checkpoints_package_imports_without_torch():
    code = "import sys, pyengine.checkpoints; assert 'torch' not in sys.modules, 'torch was imported'"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
