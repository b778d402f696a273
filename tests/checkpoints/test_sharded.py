"""Whole-state-dict save/load: transformers' shard layout, stale-shard cleanup, tied weights, and
round trips with checkpoints written and read by transformers itself."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pyengine.checkpoints import (
    HubOptions,
    load_state_dict,
    parse_size,
    read_safetensors_metadata,
    resolve_weight_files,
    save_state_dict,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (123, 123),
        ("5GB", 5 * 10**9),
        ("100KB", 100_000),
        ("2MB", 2 * 10**6),
        ("1GiB", 2**30),
        ("3MiB", 3 * 2**20),
        ("10KiB", 10_240),
        ("8Gb", 10**9),
        ("100", 100),
    ],
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("bad", ["5 TB", "GB", "five GB", "1.5GB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="valid format"):
        parse_size(bad)


def _arrays(n: int = 6, size: int = 250) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        f"layer.{i}.weight": rng.standard_normal(size).astype(np.float32) for i in range(n)
    }  # 1000 B each


@pytest.mark.parametrize("safe", [True, False])
def test_single_file_round_trip(tmp_path, safe):
    if not safe:
        pytest.importorskip("torch")
    arrays = _arrays()
    files = save_state_dict(arrays, tmp_path, safe_serialization=safe)
    assert [os.path.basename(f) for f in files] == ["model.safetensors" if safe else "pytorch_model.bin"]
    loaded = load_state_dict(files)
    assert list(loaded) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(loaded[k], arrays[k])
    if safe:
        assert read_safetensors_metadata(files[0]) == {"format": "pt"}


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_layout_matches_transformers(tmp_path, safe):
    if not safe:
        pytest.importorskip("torch")
    arrays = _arrays()  # 6 × 1000 bytes; 2500-byte shards hold 2 each
    files = save_state_dict(arrays, tmp_path, safe_serialization=safe, max_shard_size=2500)
    ext, stem = (".safetensors", "model") if safe else (".bin", "pytorch_model")
    assert [os.path.basename(f) for f in files] == [f"{stem}-0000{i}-of-00003{ext}" for i in (1, 2, 3)]
    index_path = tmp_path / f"{stem}{ext}.index.json"
    text = index_path.read_text()
    index = json.loads(text)
    assert index["metadata"] == {"total_size": 6000}
    assert index["weight_map"]["layer.0.weight"] == f"{stem}-00001-of-00003{ext}"
    assert index["weight_map"]["layer.5.weight"] == f"{stem}-00003-of-00003{ext}"
    assert text == json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert resolve_weight_files(tmp_path, HubOptions()) == files
    loaded = load_state_dict(resolve_weight_files(tmp_path, HubOptions()))
    for k in arrays:
        np.testing.assert_array_equal(loaded[k], arrays[k])


def test_oversized_tensor_gets_its_own_shard(tmp_path):
    arrays = {
        "small0": np.zeros(10, np.float32),
        "big": np.zeros(1000, np.float32),
        "small1": np.zeros(10, np.float32),
    }
    save_state_dict(arrays, tmp_path, max_shard_size=100)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    # huggingface_hub's order: an oversized tensor is appended as a finished shard immediately.
    assert index["weight_map"] == {
        "big": "model-00001-of-00002.safetensors",
        "small0": "model-00002-of-00002.safetensors",
        "small1": "model-00002-of-00002.safetensors",
    }


def test_stale_shards_and_index_are_removed(tmp_path):
    save_state_dict(_arrays(), tmp_path, max_shard_size=1000)  # 6 shards
    (tmp_path / "model-notes.txt").write_text("keep me")
    save_state_dict(_arrays(), tmp_path, max_shard_size=2500)  # 3 shards
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model-notes.txt",
        "model.safetensors.index.json",
    ]
    save_state_dict(_arrays(), tmp_path)  # unsharded: the old index would point at deleted shards
    assert sorted(os.listdir(tmp_path)) == ["model-notes.txt", "model.safetensors"]


def test_tied_arrays_are_saved_once(tmp_path):
    shared = np.ones((4, 4), np.float32)
    view = shared[:2]  # shares memory but is a different array: saved (copied) under its own name
    files = save_state_dict(
        {"embed": shared, "norm": np.zeros(4, np.float32), "lm_head": shared, "half": view}, tmp_path
    )
    loaded = load_state_dict(files)
    assert sorted(loaded) == ["embed", "half", "norm"]
    np.testing.assert_array_equal(loaded["half"], view)


def test_variant_names(tmp_path):
    files = save_state_dict(_arrays(), tmp_path, variant="fp16", max_shard_size=2500)
    assert os.path.basename(files[0]) == "model.fp16-00001-of-00003.safetensors"
    assert (tmp_path / "model.safetensors.index.fp16.json").exists()
    assert resolve_weight_files(tmp_path, HubOptions(), variant="fp16") == files


def test_duplicate_tensor_across_shards_is_an_error(tmp_path):
    save_state_dict({"a": np.zeros(1, np.float32)}, tmp_path / "x")
    save_state_dict({"a": np.zeros(1, np.float32)}, tmp_path / "y")
    with pytest.raises(ValueError, match="repeats tensors"):
        load_state_dict(
            [str(tmp_path / "x" / "model.safetensors"), str(tmp_path / "y" / "model.safetensors")]
        )


# ---------------------------------------------------------------------------------------------------
# Interop with transformers
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


def _numpy_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("safe", "shard"), [(True, "5GB"), (False, "5GB"), (True, "100KB"), (False, "100KB")]
)
@pytest.mark.transformers
def test_transformers_checkpoint_loads(tmp_path, gpt2, safe, shard):
    gpt2.save_pretrained(tmp_path, safe_serialization=safe, max_shard_size=shard)
    files = resolve_weight_files(tmp_path, HubOptions())
    assert (len(files) > 1) == (shard == "100KB")
    assert all(f.endswith(".safetensors" if safe else ".bin") for f in files)
    loaded = load_state_dict(files)
    expected = _numpy_state(gpt2)
    # transformers drops the tied lm_head (it is transformer.wte.weight) when saving.
    assert set(expected) - set(loaded) <= {"lm_head.weight"}
    for name, array in loaded.items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


@pytest.mark.parametrize(("safe", "shard"), [(True, "5GB"), (False, "5GB"), (True, "100KB")])
@pytest.mark.transformers
def test_our_checkpoint_loads_in_transformers(tmp_path, gpt2, safe, shard):
    import transformers

    state = {k: v.detach().numpy() for k, v in gpt2.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: the same array object, saved once
    gpt2.config.save_pretrained(tmp_path)
    save_state_dict(state, tmp_path, safe_serialization=safe, max_shard_size=shard)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    for name, tensor in reloaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), state[name], err_msg=name)
