"""Tiny random models shared by the utilities tests, and a local Hub (`hub` fixture).

Every pair is (transformers 4.57 model, pyengine model) with identical weights, in eval mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.models.bert import BertConfig, BertModel  # noqa: E402
from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402
from tests.utilities.hub_server import HubServer  # noqa: E402

BERT_KWARGS = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=32)  # fmt: skip
GPT2_KWARGS = dict(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4)


def copy_weights(hf: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    ours.load_state_dict(hf.state_dict(), strict=True)
    ours.tie_weights()
    return ours.eval()


@pytest.fixture
def bert_pair() -> tuple[Any, BertModel]:
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**BERT_KWARGS)).eval()
    return hf, copy_weights(hf, BertModel(BertConfig(**BERT_KWARGS)))


@pytest.fixture
def gpt2_pair() -> tuple[Any, GPT2LMHeadModel]:
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_KWARGS)).eval()
    return hf, copy_weights(hf, GPT2LMHeadModel(GPT2Config(**GPT2_KWARGS)))


@pytest.fixture
def hub(tmp_path, monkeypatch) -> HubServer:
    """A running local Hub that huggingface_hub (and so pyengine and transformers) talks to.

    huggingface_hub reads HF_ENDPOINT once, at import, into `constants.ENDPOINT` and the resolve-URL
    template (also copied into `file_download`), so those are patched; HF_TOKEN keeps any real login out.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.file_download as file_download

    with HubServer(tmp_path) as server:
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server
