"""push_to_hub and Hub downloads through a local Hub server (tests/utilities/hub_server.py).

The server speaks the few endpoints huggingface_hub 0.36 uses; huggingface_hub's endpoint constants point
at it (the `hub` fixture). Round trips must be exact; revisions pin commits; the cache serves
`local_files_only` / offline loads after the first download; `force_download` fetches again; deprecated
arguments still work with a FutureWarning.
"""

from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.auto import AutoModel  # noqa: E402
from pyengine.models.bert import BertConfig, BertModel  # noqa: E402
from tests.utilities.conftest import BERT_KWARGS  # noqa: E402
from tests.utilities.hub_server import USER  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


def _bert(seed: int) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(**BERT_KWARGS)).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _gets(hub) -> list[str]:
    return [path for method, path, _ in hub.requests if method == "GET"]


def test_push_then_load_round_trip(hub, tmp_path):
    model = _bert(0)
    commit = model.push_to_hub("acme/tiny-bert", commit_message="first")
    assert commit.startswith(f"{hub.url}/acme/tiny-bert/commit/") and commit.oid in commit
    files = hub.repos["acme/tiny-bert"].commits[commit.oid]
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    loaded = BertModel.from_pretrained("acme/tiny-bert", cache_dir=tmp_path / "cache")
    assert _same(loaded, model) and loaded.config.pruned_heads == {}
    assert type(AutoModel.from_pretrained("acme/tiny-bert", cache_dir=tmp_path / "cache")) is BertModel
    theirs = transformers.BertModel.from_pretrained("acme/tiny-bert", cache_dir=tmp_path / "hf-cache")
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(theirs(ids).last_hidden_state, model(ids).last_hidden_state)


def test_revisions_force_download_and_offline(hub, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, second = _bert(0), _bert(1)
    v1 = first.push_to_hub("acme/versions").oid
    v2 = second.push_to_hub("acme/versions", safe_serialization=False).oid  # .bin next to the old safetensors
    assert v1 != v2
    assert _same(BertModel.from_pretrained("acme/versions", cache_dir=cache, revision=v1), first)
    assert _same(BertModel.from_pretrained("acme/versions", cache_dir=cache, use_safetensors=False), second)
    before = len(_gets(hub))
    BertModel.from_pretrained("acme/versions", cache_dir=cache, revision=v1)  # cached: no new GET
    assert len(_gets(hub)) == before
    BertModel.from_pretrained("acme/versions", cache_dir=cache, revision=v1, force_download=True)
    assert len(_gets(hub)) > before
    seen = len(hub.requests)
    offline = BertModel.from_pretrained("acme/versions", cache_dir=cache, revision=v1, local_files_only=True)
    assert _same(offline, first) and len(hub.requests) == seen  # nothing asked of the server
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert _same(BertModel.from_pretrained("acme/versions", cache_dir=cache, use_safetensors=False), second)
    assert len(hub.requests) == seen
    with pytest.raises(OSError, match="not a valid git identifier|Cannot find"):
        BertModel.from_pretrained("acme/versions", cache_dir=cache, revision="no-such-branch")


def test_push_to_branch_and_pin_it(hub, tmp_path):
    main, dev = _bert(0), _bert(2)
    main.push_to_hub("acme/branches")
    dev.push_to_hub("acme/branches", revision="dev", commit_description="work in progress")
    assert set(hub.repos["acme/branches"].branches) == {"main", "dev"}
    assert _same(BertModel.from_pretrained("acme/branches", cache_dir=tmp_path, revision="dev"), dev)
    assert _same(BertModel.from_pretrained("acme/branches", cache_dir=tmp_path), main)


def test_hub_kwargs_accepted(hub, tmp_path):
    model = _bert(0)
    model.push_to_hub("acme/kwargs")
    proxies = {"https": "http://proxy.invalid:3128"}  # our server is plain http: the https proxy is unused
    loaded = BertModel.from_pretrained("acme/kwargs", cache_dir=tmp_path, proxies=proxies, token="hf_x")
    assert _same(loaded, model)
    for name, value in (("mirror", "tuna"), ("resume_download", True)):
        with pytest.warns(FutureWarning, match=f"`{name}` is deprecated and ignored"):
            assert _same(BertModel.from_pretrained("acme/kwargs", cache_dir=tmp_path, **{name: value}), model)
    assert BertModel.from_pretrained("acme/kwargs", cache_dir=tmp_path, output_attentions=True).config.output_attentions


def test_deprecated_push_arguments(hub):
    model = _bert(0)
    with pytest.warns(FutureWarning, match="use_auth_token"):
        model.push_to_hub("acme/old-args", use_auth_token="hf_secret")
    assert ("POST", "/api/repos/create", "Bearer hf_secret") in hub.requests
    with pytest.warns(FutureWarning, match="organization"):
        model.push_to_hub("org-repo", organization="my-org", private=True)
    assert hub.repos["my-org/org-repo"].private
    with pytest.warns(FutureWarning, match="repo_url"):
        model.push_to_hub(repo_url=f"{hub.url}/acme/by-url")
    assert "acme/by-url" in hub.repos
    with pytest.warns(FutureWarning, match="repo_name"):
        commit = model.push_to_hub(repo_name="bare-name")
    assert f"{USER}/bare-name" in hub.repos and f"/{USER}/bare-name/commit/" in commit
    with pytest.raises(ValueError, match="both specified"):
        model.push_to_hub("acme/x", repo_url=f"{hub.url}/acme/y")


def test_save_pretrained_push_uploads_modified_files(hub, tmp_path):
    folder = tmp_path / "local-bert"
    folder.mkdir()
    (folder / "notes.txt").write_text("written before saving: not part of the push")
    model = _bert(0)
    model.save_pretrained(folder, push_to_hub=True, repo_id="acme/from-save", commit_message="save+push")
    files = hub.repos["acme/from-save"].commits[hub.repos["acme/from-save"].branches["main"]]
    assert "notes.txt" not in files and {"config.json", "model.safetensors"} <= set(files)
    model.save_pretrained(tmp_path / "acme-default", push_to_hub=True)  # repo id = folder name
    assert f"{USER}/acme-default" in hub.repos
    assert _same(BertModel.from_pretrained("acme/from-save", cache_dir=tmp_path / "c"), model)


def test_push_uses_existing_working_dir(hub, tmp_path, monkeypatch):
    """transformers' rule: a folder named like the repo in the working directory is saved into and kept."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("kept")
    _bert(0).push_to_hub("acme/kept")
    assert os.path.isfile(os.path.join("kept", "config.json"))
    _bert(0).push_to_hub("acme/temp")
    assert not os.path.exists("temp")


def test_no_change_push_makes_no_commit(hub):
    model = _bert(0)
    first = model.push_to_hub("acme/same")
    again = model.push_to_hub("acme/same")
    assert again.oid == first.oid and len(hub.repos["acme/same"].commits) == 2  # initial + one upload


def test_config_and_generation_config_push_round_trip(hub, tmp_path):
    from pyengine.generation_config import GenerationConfig

    config = BertConfig(**BERT_KWARGS)
    commit = config.push_to_hub("acme/just-config")
    assert commit.commit_message == "Upload config"
    assert "config.json" in hub.repos["acme/just-config"].commits[commit.oid]
    assert BertConfig.from_pretrained("acme/just-config", cache_dir=tmp_path / "c").to_dict() == config.to_dict()
    theirs = transformers.AutoConfig.from_pretrained("acme/just-config", cache_dir=tmp_path / "hf")
    assert theirs.hidden_size == config.hidden_size and theirs.model_type == "bert"

    gen = GenerationConfig(do_sample=True, top_k=7, max_new_tokens=11)
    gen.save_pretrained(tmp_path / "gen-folder", push_to_hub=True, repo_id="acme/just-config",
                        commit_message="sampling defaults")
    files = hub.repos["acme/just-config"].commits
    assert any("generation_config.json" in f for f in files.values())
    back = GenerationConfig.from_pretrained("acme/just-config", cache_dir=tmp_path / "c2")
    assert (back.do_sample, back.top_k, back.max_new_tokens) == (True, 7, 11)
    assert transformers.GenerationConfig.from_pretrained("acme/just-config", cache_dir=tmp_path / "hf2").top_k == 7


def test_tf_and_flax_models_push_and_load_back(hub, tmp_path):
    """TF and Flax models upload what their save_pretrained writes; loading the repo gives the same weights."""
    import numpy as np

    from pyengine.models.bert.modeling_flax import FlaxBertModel
    from pyengine.models.bert.modeling_tf import TFBertModel

    model = _bert(2)
    model.save_pretrained(tmp_path / "pt")
    ids = np.array([[5, 6, 7, 8]])
    want = model(torch.tensor(ids)).last_hidden_state.detach().numpy()

    tf_model = TFBertModel.from_pretrained(tmp_path / "pt", from_pt=True)
    commit = tf_model.push_to_hub("acme/tf-bert")
    assert "tf_model.h5" in hub.repos["acme/tf-bert"].commits[commit.oid]
    tf_back = TFBertModel.from_pretrained("acme/tf-bert", cache_dir=tmp_path / "c1")
    np.testing.assert_allclose(tf_back(ids).last_hidden_state.numpy(), want, atol=1e-4)

    flax_model = FlaxBertModel.from_pretrained(tmp_path / "pt", from_pt=True)
    flax_model.save_pretrained(tmp_path / "flax-bert", push_to_hub=True, repo_id="acme/flax-bert")
    assert "flax_model.msgpack" in set().union(*hub.repos["acme/flax-bert"].commits.values())
    flax_back = FlaxBertModel.from_pretrained("acme/flax-bert", cache_dir=tmp_path / "c2")
    np.testing.assert_allclose(np.asarray(flax_back(ids).last_hidden_state), want, atol=1e-4)
