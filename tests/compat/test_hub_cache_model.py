"""A hub id already in the Hugging Face cache loads as a model with the network off.

The cache is laid out as huggingface_hub writes it (`models--org--name/{blobs,refs/main,snapshots/<sha>}`),
filled from a transformers-written checkpoint; HF_HUB_OFFLINE=1 and local_files_only=True both work, and
generation from it equals transformers' on the same files.
"""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import AutoModelForCausalLM  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cache(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "src"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500)).save_pretrained(src)
    repo = tmp_path / "hub" / "models--acme--tiny-gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snap = repo / "snapshots" / SHA
    snap.mkdir(parents=True)
    for f in src.iterdir():
        blob = repo / "blobs" / f.name.replace(".", "_")
        blob.parent.mkdir(exist_ok=True)
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(blob)
    return tmp_path / "hub", src


def test_offline_env(cache, monkeypatch):
    hub, src = cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    ours = AutoModelForCausalLM.from_pretrained("acme/tiny-gpt2", cache_dir=hub)
    hf = transformers.GPT2LMHeadModel.from_pretrained(src)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(ours.generate(ids, max_new_tokens=5), hf.generate(ids, max_new_tokens=5))


def test_local_files_only_and_revision(cache):
    hub, _ = cache
    model = AutoModelForCausalLM.from_pretrained("acme/tiny-gpt2", cache_dir=hub, local_files_only=True, revision=SHA)
    assert model.config.n_layer == 2
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained("acme/not-cached", cache_dir=hub, local_files_only=True)
