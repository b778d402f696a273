"""Damaged, mislabelled and hostile checkpoint folders through `from_pretrained` and the readers.

Promise: a bad file raises OSError or ValueError whose message names the file and what to do; nothing is
read outside the model folder; no pickle code runs; no header makes us allocate more than the file holds.
Not promised: detecting bit flips inside tensor data (safetensors and GGUF carry no checksum).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import tracemalloc

import pytest

torch = pytest.importorskip("torch")

from pyengine import checkpoints  # noqa: E402
from pyengine.auto import AutoModelForCausalLM  # noqa: E402
from pyengine.checkpoints import read_gguf  # noqa: E402
from pyengine.models.gpt2 import GPT2LMHeadModel  # noqa: E402
from tests.reliability._models import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny GPT-2 saved both ways; tests copy a folder before damaging it."""
    root = tmp_path_factory.mktemp("saved")
    model = tiny_model("gpt2")
    model.save_pretrained(root / "st")
    model.save_pretrained(root / "bin", safe_serialization=False)
    return {"st": str(root / "st"), "bin": str(root / "bin")}


def _copy(saved: dict[str, str], kind: str, tmp_path) -> str:
    folder = tmp_path / kind
    shutil.copytree(saved[kind], folder)
    return str(folder)


def _load(folder: str):
    return GPT2LMHeadModel.from_pretrained(folder)


# -- truncated, bit-flipped, mislabelled weights -----------------------------------------------------------


@pytest.mark.parametrize("kind,name", [("st", "model.safetensors"), ("bin", "pytorch_model.bin")])
@pytest.mark.parametrize("keep", [0, 4, 9, 0.5, -1])
def test_truncated_weights(saved, tmp_path, kind, name, keep):
    folder = _copy(saved, kind, tmp_path)
    path = os.path.join(folder, name)
    data = open(path, "rb").read()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    open(path, "wb").write(data[:cut])
    with pytest.raises(OSError, match=rf"{name}.*(truncated|not a)"):
        _load(folder)


def test_bit_flip_in_safetensors_header_is_refused(saved, tmp_path):
    folder = _copy(saved, "st", tmp_path)
    path = os.path.join(folder, "model.safetensors")
    data = bytearray(open(path, "rb").read())
    data[8] ^= 0x40  # '{' -> ';': the JSON header no longer parses
    open(path, "wb").write(bytes(data))
    with pytest.raises(OSError, match="not a safetensors file"):
        _load(folder)


def test_bit_flip_in_tensor_data_loads_the_flipped_value(saved, tmp_path):
    """No checksum in the format: the flip is not detected, it reaches exactly one weight (documented)."""
    folder = _copy(saved, "st", tmp_path)
    path = os.path.join(folder, "model.safetensors")
    header, start = checkpoints.safetensors.read_safetensors_header(path)
    name = "transformer.wte.weight"
    begin = start + header[name]["data_offsets"][0]
    data = bytearray(open(path, "rb").read())
    data[begin + 3] ^= 0x01  # lowest exponent bit of the first float32
    open(path, "wb").write(bytes(data))
    loaded = _load(folder).state_dict()[name]
    expected = tiny_model("gpt2").state_dict()[name]
    assert int((loaded != expected).sum()) == 1 and loaded[0, 0] != expected[0, 0]


def test_torch_bin_named_safetensors(saved, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(os.path.join(saved["bin"], "config.json"), folder)
    shutil.copy(os.path.join(saved["bin"], "pytorch_model.bin"), folder / "model.safetensors")
    with pytest.raises(OSError, match="model.safetensors is truncated or not a safetensors file"):
        _load(str(folder))


def test_safetensors_named_torch_bin(saved, tmp_path):
    """Regression: torch.load's "Weights only load failed" made this look like a malicious pickle."""
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(os.path.join(saved["st"], "config.json"), folder)
    shutil.copy(os.path.join(saved["st"], "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(
        OSError, match=r"pytorch_model.bin .*not a PyTorch checkpoint.*looks like a safetensors"
    ):
        _load(str(folder))


@pytest.mark.parametrize("content", [b"hello world, not a checkpoint" * 3, b"\x80\x02" + bytes(range(256))])
def test_text_or_garbage_named_torch_bin(tmp_path, content):
    """Regression: a text file escaped torch.load as a bare `KeyError: 101`."""
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(content)
    with pytest.raises(OSError, match="not a PyTorch checkpoint"):
        checkpoints.load_torch_bin(path)


# -- config.json -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe garbage"])
def test_config_that_is_not_json(saved, tmp_path, text):
    folder = _copy(saved, "st", tmp_path)
    with open(os.path.join(folder, "config.json"), "w", encoding="latin-1") as f:
        f.write(text)
    with pytest.raises(OSError, match="config.json' is not a valid JSON file"):
        AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("model_type", ["not-a-model", "gpt-2", None])
def test_config_with_unknown_model_type(saved, tmp_path, model_type):
    folder = _copy(saved, "st", tmp_path)
    config = json.load(open(os.path.join(folder, "config.json")))
    config["model_type"] = model_type
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(ValueError, match=r"model_type.*supports: .*gpt2"):
        AutoModelForCausalLM.from_pretrained(folder)


# -- sharded index pointing outside the folder -----------------------------------------------------------


@pytest.fixture
def sharded(tmp_path) -> tuple[str, str]:
    """A sharded checkpoint in `tmp/model/` and a valid shard outside it, in `tmp/outside.safetensors`."""
    folder = tmp_path / "model"
    tiny_model("gpt2").save_pretrained(folder, max_shard_size=4_000)
    assert (folder / "model.safetensors.index.json").is_file()
    outside = tmp_path / "outside.safetensors"
    shutil.copy(sorted(folder.glob("model-00001-of-*.safetensors"))[0], outside)
    return str(folder), str(outside)


@pytest.mark.parametrize(
    "shard",
    ["../outside.safetensors", "{outside}", "sub/../../outside.safetensors", "..\\outside.safetensors"],
)
def test_index_cannot_point_outside_the_folder(sharded, monkeypatch, shard):
    folder, outside = sharded
    index_path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(index_path))
    first = sorted(index["weight_map"])[0]
    index["weight_map"][first] = shard.format(outside=outside)
    json.dump(index, open(index_path, "w"))
    opened: list[str] = []
    real_load = checkpoints.sharded.load_safetensors
    monkeypatch.setattr(
        checkpoints.sharded, "load_safetensors", lambda p: opened.append(str(p)) or real_load(p)
    )
    for target in (folder, index_path):  # the folder, or the index file passed directly
        with pytest.raises(OSError, match="not a file inside the checkpoint folder"):
            _load(target) if target == folder else checkpoints.resolve_weight_files(
                target, checkpoints.HubOptions()
            )
    assert opened == [], f"files were read before the index was refused: {opened}"


def test_index_may_use_a_subfolder(sharded):
    folder, _ = sharded
    os.makedirs(os.path.join(folder, "shards"))
    index_path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(index_path))
    for name in set(index["weight_map"].values()):
        os.rename(os.path.join(folder, name), os.path.join(folder, "shards", name))
    index["weight_map"] = {k: f"shards/{v}" for k, v in index["weight_map"].items()}
    json.dump(index, open(index_path, "w"))
    loaded = _load(folder).state_dict()
    for name, value in tiny_model("gpt2").state_dict().items():
        assert torch.equal(loaded[name], value), name


def test_index_with_a_non_string_shard(sharded):
    folder, _ = sharded
    index_path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(index_path))
    index["weight_map"][sorted(index["weight_map"])[0]] = 5
    json.dump(index, open(index_path, "w"))
    with pytest.raises(OSError, match="not a valid checkpoint index"):
        _load(folder)


# -- malicious pickle through from_pretrained -----------------------------------------------------------


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_through_from_pretrained(saved, tmp_path):
    folder = _copy(saved, "bin", tmp_path)
    marker = tmp_path / "pwned"
    state = dict(tiny_model("gpt2").state_dict())
    state["evil"] = _Exploit(str(marker))
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    with pytest.raises(OSError, match="Refusing to load .*pytorch_model.bin.*execute code"):
        AutoModelForCausalLM.from_pretrained(folder)
    assert not marker.exists(), "the pickle's code ran"


# -- GGUF headers with absurd counts and sizes ------------------------------------------------------------


def _gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf(n_tensors: int = 0, n_kv: int = 0, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body + b"\0" * 64


def _nested_arrays(depth: int) -> bytes:
    return struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)  # ARRAY of ARRAY of ... of 0 u32


HOSTILE_GGUF = {
    "tensor count 2**63": _gguf(n_tensors=2**63),
    "kv count 2**64-1": _gguf(n_kv=2**64 - 1),
    "key length 2**64-1": _gguf(n_kv=1, body=struct.pack("<Q", 2**64 - 1)),
    "string value 2**62": _gguf(n_kv=1, body=_gguf_string(b"k") + struct.pack("<IQ", 8, 2**62)),
    "u8 array of 2**60": _gguf(n_kv=1, body=_gguf_string(b"k") + struct.pack("<IIQ", 9, 0, 2**60)),
    "string array of 2**60": _gguf(n_kv=1, body=_gguf_string(b"k") + struct.pack("<IIQ", 9, 8, 2**60)),
    "arrays nested 5000 deep": _gguf(
        n_kv=1, body=_gguf_string(b"k") + struct.pack("<I", 9) + _nested_arrays(5000)
    ),
    "n_dims 2**31": _gguf(n_tensors=1, body=_gguf_string(b"t") + struct.pack("<I", 2**31)),
    "dims overflowing int64": _gguf(
        n_tensors=1,
        body=_gguf_string(b"t")
        + struct.pack("<I4Q", 4, 2**32, 2**32, 2**32, 2**32)
        + struct.pack("<IQ", 0, 0),
    ),
    "data offset 2**63": _gguf(
        n_tensors=1, body=_gguf_string(b"t") + struct.pack("<IQ", 1, 4) + struct.pack("<IQ", 0, 2**63)
    ),
    "alignment 0": _gguf(n_kv=1, body=_gguf_string(b"general.alignment") + struct.pack("<II", 4, 0)),
    "alignment 3": _gguf(n_kv=1, body=_gguf_string(b"general.alignment") + struct.pack("<II", 4, 3)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GGUF))
def test_gguf_hostile_header_is_refused_quickly_and_small(tmp_path, case):
    path = tmp_path / "x.gguf"
    path.write_bytes(HOSTILE_GGUF[case])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=r"x.gguf.*(truncated|corrupt)"):
            gguf = read_gguf(path)
            for name in gguf.tensors:  # a header that parses must still fail when its data is read
                gguf.load_tensor(name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0, f"{case}: took too long"
    assert peak < 16 * 2**20, (
        f"{case}: allocated {peak / 2**20:.1f} MiB for a {path.stat().st_size}-byte file"
    )


def test_gguf_valid_nested_arrays_still_read(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(_gguf(n_kv=1, body=_gguf_string(b"k") + struct.pack("<I", 9) + _nested_arrays(3)))
    assert read_gguf(path).metadata["k"] == [[[[]]]]


def test_gguf_missing_llama_metadata_is_a_value_error(tmp_path):
    body = _gguf_string(b"general.architecture") + struct.pack("<I", 8) + _gguf_string(b"llama")
    path = tmp_path / "arch.gguf"
    path.write_bytes(_gguf(n_kv=1, body=body))
    with pytest.raises(ValueError, match="llama metadata is missing or invalid"):
        checkpoints.load_gguf_config(path)


def test_safetensors_header_with_wrong_field_types(tmp_path):
    """Regression: an entry without "dtype" escaped load_safetensors as KeyError."""
    for entry in ({"shape": [1], "data_offsets": [0, 4]}, 5, {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
                  {"dtype": "BF16", "shape": [3], "data_offsets": [0, 4]}):  # fmt: skip
        header = json.dumps({"w": entry}).encode()
        path = tmp_path / "x.safetensors"
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        with pytest.raises(OSError, match="not a safetensors file"):
            checkpoints.load_safetensors(path)
