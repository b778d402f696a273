"""File resolution: local folders, single files, the Hub cache with the network off, and error messages."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from pyengine.checkpoints import (
    HubOptions,
    resolve_file,
    resolve_weight_files,
    save_safetensors,
    save_state_dict,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def _touch(path, content: bytes = b"{}") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return str(path)


# ---------------------------------------------------------------------------------------------------
# HubOptions
# ---------------------------------------------------------------------------------------------------


def test_pop_from_takes_hub_keys_only():
    kwargs = {
        "cache_dir": "/c",
        "revision": "v1",
        "local_files_only": True,
        "subfolder": "sub",
        "resume_download": True,
        "torch_dtype": "float16",
        "proxies": {"http": "p"},
    }
    options = HubOptions.pop_from(kwargs)
    assert options == HubOptions(
        cache_dir="/c", revision="v1", local_files_only=True, proxies={"http": "p"}, subfolder="sub"
    )
    assert kwargs == {"torch_dtype": "float16"}


def test_pop_from_use_auth_token_alias_and_commit_hash():
    kwargs = {"use_auth_token": "hf_x", "_commit_hash": SHA}
    with pytest.warns(FutureWarning, match="use_auth_token"):
        options = HubOptions.pop_from(kwargs)
    assert options.token == "hf_x" and options.revision == SHA and kwargs == {}
    with pytest.raises(ValueError, match="only set `token`"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        HubOptions.pop_from({"use_auth_token": "a", "token": "b"})


# ---------------------------------------------------------------------------------------------------
# Local folders and files
# ---------------------------------------------------------------------------------------------------


def test_local_dir_and_subfolder(tmp_path):
    config = _touch(tmp_path / "config.json")
    nested = _touch(tmp_path / "sub" / "config.json")
    assert resolve_file(tmp_path, "config.json", HubOptions()) == config
    assert resolve_file(tmp_path, "config.json", HubOptions(subfolder="sub")) == nested
    assert resolve_file(tmp_path, "generation_config.json", HubOptions(), required=False) is None
    with pytest.raises(OSError, match="does not appear to have a file named generation_config.json"):
        resolve_file(tmp_path, "generation_config.json", HubOptions())


def test_weight_order_prefers_safetensors(tmp_path):
    bin_file = _touch(tmp_path / "pytorch_model.bin")
    safe = _touch(tmp_path / "model.safetensors")
    assert resolve_weight_files(tmp_path, HubOptions()) == [safe]
    assert resolve_weight_files(tmp_path, HubOptions(), use_safetensors=False) == [bin_file]
    os.remove(safe)
    assert resolve_weight_files(tmp_path, HubOptions()) == [bin_file]
    with pytest.raises(OSError, match=r"model.safetensors \(use_safetensors=True\)"):
        resolve_weight_files(tmp_path, HubOptions(), use_safetensors=True)


def test_sharded_safetensors_beats_single_bin(tmp_path):
    files = save_state_dict(
        {"a": np.zeros(100, np.float32), "b": np.zeros(100, np.float32)}, tmp_path, max_shard_size=400
    )
    _touch(tmp_path / "pytorch_model.bin")
    assert resolve_weight_files(tmp_path, HubOptions()) == files


def test_single_file_and_index_paths(tmp_path):
    single = tmp_path / "weights.safetensors"
    save_safetensors({"a": np.zeros(1, np.float32)}, single)
    assert resolve_weight_files(single, HubOptions()) == [str(single)]
    files = save_state_dict(
        {"a": np.zeros(100, np.float32), "b": np.zeros(100, np.float32)}, tmp_path / "s", max_shard_size=400
    )
    assert resolve_weight_files(tmp_path / "s" / "model.safetensors.index.json", HubOptions()) == files
    with pytest.raises(OSError, match="not a .safetensors, .bin or .index.json"):
        resolve_weight_files(_touch(tmp_path / "notes.txt"), HubOptions())


def test_index_with_missing_shard(tmp_path):
    save_state_dict(
        {"a": np.zeros(100, np.float32), "b": np.zeros(100, np.float32)}, tmp_path, max_shard_size=400
    )
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(OSError, match="missing.*model-00002-of-00002"):
        resolve_weight_files(tmp_path, HubOptions())


def test_no_weights_message(tmp_path):
    with pytest.raises(OSError, match="no file named model.safetensors or pytorch_model.bin found"):
        resolve_weight_files(tmp_path, HubOptions())


@pytest.mark.parametrize("name", ["tf_model.h5", "flax_model.msgpack"])
def test_tf_or_flax_only_says_so(tmp_path, name):
    _touch(tmp_path / name)
    with pytest.raises(OSError, match=f"has {name} but no PyTorch-format weights.*not supported"):
        resolve_weight_files(tmp_path, HubOptions())


# ---------------------------------------------------------------------------------------------------
# Hub ids: the HF cache with the network off, and error mapping
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_cache(tmp_path):
    """`models--org--tiny/{blobs,refs/main,snapshots/<sha>/...}`: the layout huggingface_hub writes."""
    pytest.importorskip("huggingface_hub")
    repo = tmp_path / "models--org--tiny"
    _touch(repo / "refs" / "main", SHA.encode())
    blob = _touch(repo / "blobs" / "c0ffee", b'{"model_type": "gpt2"}')
    snapshot = repo / "snapshots" / SHA
    os.makedirs(snapshot / "sub")
    os.symlink(os.path.relpath(blob, snapshot), snapshot / "config.json")
    save_safetensors({"w": np.arange(3, dtype=np.float32)}, snapshot / "model.safetensors")
    _touch(snapshot / "sub" / "config.json")
    return tmp_path


def test_cached_repo_loads_offline_via_env(fake_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = HubOptions(cache_dir=fake_cache)
    path = resolve_file("org/tiny", "config.json", options)
    assert path is not None and path.endswith(os.path.join(SHA, "config.json"))
    with open(path) as f:
        assert f.read() == '{"model_type": "gpt2"}'
    assert resolve_weight_files("org/tiny", options)[0].endswith(os.path.join(SHA, "model.safetensors"))
    assert (
        resolve_file("org/tiny", "config.json", HubOptions(cache_dir=fake_cache, subfolder="sub")) is not None
    )


def test_cached_repo_loads_with_local_files_only(fake_cache, online):
    options = HubOptions(cache_dir=fake_cache, local_files_only=True)
    assert resolve_file("org/tiny", "config.json", options) is not None
    assert resolve_file("org/tiny", "generation_config.json", options, required=False) is None
    with pytest.raises(OSError, match="Cannot find generation_config.json for org/tiny in the local cache"):
        resolve_file("org/tiny", "generation_config.json", options)
    with pytest.raises(OSError, match="Cannot find config.json for org/other"):
        resolve_file("org/other", "config.json", options)


def test_invalid_repo_id(tmp_path):
    pytest.importorskip("huggingface_hub")
    with pytest.raises(OSError, match="neither an existing local folder nor a valid Hub repo id"):
        resolve_file("not//a valid id", "config.json", HubOptions(cache_dir=tmp_path, local_files_only=True))


@pytest.fixture
def online(monkeypatch):
    """Network allowed as far as our code can tell (huggingface_hub reads HF_HUB_OFFLINE at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize(
    ("error_name", "message", "required_none"),
    [
        ("RepositoryNotFoundError", "is not a local folder and is not a valid model identifier", False),
        ("GatedRepoError", "gated repo", False),
        ("RevisionNotFoundError", "is not a valid git identifier", False),
        ("EntryNotFoundError", "does not appear to have a file named config.json", True),
        ("HfHubHTTPError", "specific connection error", False),
    ],
)
def test_hub_errors_become_oserror(monkeypatch, online, error_name, message, required_none):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import errors

    def fake_download(*args, **kwargs):
        raise getattr(errors, error_name)("boom")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(OSError, match=message):
        resolve_file("org/repo", "config.json", HubOptions(revision="v9"))
    if required_none:
        assert resolve_file("org/repo", "config.json", HubOptions(), required=False) is None


def test_hub_download_receives_options(monkeypatch, online):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    seen = {}

    def fake_download(repo_id, filename, **kwargs):
        seen.update(kwargs, repo_id=repo_id, filename=filename)
        return "/cache/file"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    options = HubOptions(
        cache_dir="/c", revision="r", force_download=True, token="t", proxies={"h": "p"}, subfolder="s"
    )
    assert resolve_file("org/repo", "config.json", options) == "/cache/file"
    assert seen == {
        "repo_id": "org/repo",
        "filename": "config.json",
        "subfolder": "s",
        "revision": "r",
        "cache_dir": "/c",
        "force_download": True,
        "local_files_only": False,
        "token": "t",
        "proxies": {"h": "p"},
    }
