"""Embedding access, weight tying (and cloning under torchscript) and resize_token_embeddings vs transformers 4.57.

Resizing draws the new rows from the RNG, so both libraries run under the same seed and must produce the
same matrices bit for bit: the mean/covariance draws (`mean_resizing=True`, the default) and `_init_weights`
draws (`mean_resizing=False`), growing and shrinking, for BERT (padding row) and for tied / untied GPT-2 heads.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402
from tests.utilities.conftest import GPT2_KWARGS, copy_weights  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


def _assert_same_state(ours: nn.Module, theirs: nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert set(mine) == set(other)
    for name, tensor in other.items():
        assert mine[name].shape == tensor.shape and torch.equal(mine[name], tensor), name


def test_get_set_embeddings(bert_pair, gpt2_pair):
    hf, ours = bert_pair
    assert ours.get_input_embeddings() is ours.embeddings.word_embeddings
    assert ours.get_output_embeddings() is None and hf.get_output_embeddings() is None
    new = nn.Embedding(99, 64)
    ours.set_input_embeddings(new)
    assert ours.get_input_embeddings() is new
    hf_lm, lm = gpt2_pair
    assert lm.get_input_embeddings() is lm.transformer.wte  # delegated to the base model
    assert lm.get_output_embeddings() is lm.lm_head
    head = nn.Linear(64, 100, bias=False)
    lm.set_output_embeddings(head)
    lm.tie_weights()
    assert lm.lm_head is head and head.weight is lm.transformer.wte.weight


def test_torchscript_clones_instead_of_tying():
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_KWARGS, torchscript=True)).eval()
    ours = copy_weights(hf, GPT2LMHeadModel(GPT2Config(**GPT2_KWARGS, torchscript=True)))
    for model in (hf, ours):
        head, emb = model.get_output_embeddings(), model.get_input_embeddings()
        assert head.weight is not emb.weight and torch.equal(head.weight, emb.weight)
    assert ours.lm_head.out_features == 100
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(ours(ids, return_dict=False)[0], hf(ids)[0])  # torchscript → tuples, like transformers


@pytest.mark.parametrize("new_size", [120, 80])
@pytest.mark.parametrize("mean_resizing", [True, False])
@torch.no_grad()
def test_resize_bert(bert_pair, new_size, mean_resizing):
    hf, ours = bert_pair
    torch.manual_seed(3)
    hf_emb = hf.resize_token_embeddings(new_size, mean_resizing=mean_resizing)
    torch.manual_seed(3)
    emb = ours.resize_token_embeddings(new_size, mean_resizing=mean_resizing)
    assert emb is ours.get_input_embeddings() and emb.num_embeddings == hf_emb.num_embeddings == new_size
    assert emb.padding_idx == hf_emb.padding_idx == 0
    assert ours.config.vocab_size == hf.config.vocab_size == new_size
    _assert_same_state(ours, hf)
    ids = torch.randint(0, new_size, (2, 6))
    assert torch.equal(ours(ids).last_hidden_state, hf(ids).last_hidden_state)


def test_resize_none_and_pad_to_multiple(bert_pair):
    hf, ours = bert_pair
    before = ours.get_input_embeddings()
    assert ours.resize_token_embeddings() is before and ours.config.vocab_size == 99
    torch.manual_seed(1)
    hf.resize_token_embeddings(None, pad_to_multiple_of=32)
    torch.manual_seed(1)
    assert ours.resize_token_embeddings(None, pad_to_multiple_of=32).num_embeddings == 128
    _assert_same_state(ours, hf)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("mean_resizing", [True, False])
@torch.no_grad()
def test_resize_gpt2_head_follows(tie, mean_resizing):
    """Tied: the head is the resized embedding; untied: the head is resized as a Linear with its own draws."""
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_KWARGS, tie_word_embeddings=tie)).eval()
    ours = copy_weights(hf, GPT2LMHeadModel(GPT2Config(**GPT2_KWARGS, tie_word_embeddings=tie)))
    torch.manual_seed(5)
    hf.resize_token_embeddings(111, mean_resizing=mean_resizing)
    torch.manual_seed(5)
    ours.resize_token_embeddings(111, mean_resizing=mean_resizing)
    _assert_same_state(ours, hf)
    assert (ours.lm_head.weight is ours.transformer.wte.weight) == tie
    assert ours.lm_head.out_features == 111
    ids = torch.randint(0, 111, (2, 4))
    assert torch.equal(ours(ids).logits, hf(ids).logits)
