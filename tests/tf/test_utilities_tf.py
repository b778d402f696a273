"""TF base-class utilities against transformers 4.57 on the same tiny checkpoint: parameter counts,
embeddings getters / setters, bias and LM-head helpers, resize_token_embeddings; and TFAutoModel*."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pyengine.backends.tf import tf
from pyengine.models.auto_tf import TFAutoModel, TFAutoModelForCausalLM, TFAutoModelForSeq2SeqLM
from pyengine.models.bert.config import BertConfig
from pyengine.models.bert.modeling_tf import TFBertModel
from pyengine.models.gpt2.config import GPT2Config
from pyengine.models.gpt2.modeling_tf import TFGPT2LMHeadModel, TFGPT2Model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2_tf")
    TFGPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert_tf")
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16)  # fmt: skip
    TFBertModel(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("which", ["gpt2", "bert"])
def test_counts_embeddings_and_bias_helpers_match_transformers(which, gpt2_dir, bert_dir):
    path, ours_cls, theirs_cls = ((gpt2_dir, TFGPT2LMHeadModel, transformers.TFGPT2LMHeadModel) if which == "gpt2"
                                  else (bert_dir, TFBertModel, transformers.TFBertModel))  # fmt: skip
    ours, theirs = ours_cls.from_pretrained(path), theirs_cls.from_pretrained(path)
    for only_trainable in (False, True):
        assert ours.num_parameters(only_trainable) == theirs.num_parameters(only_trainable)
    np.testing.assert_array_equal(np.asarray(ours.get_input_embeddings().weight),
                                  np.asarray(theirs.get_input_embeddings().weights[0]))  # fmt: skip
    out_ours, out_theirs = ours.get_output_embeddings(), theirs.get_output_embeddings()
    assert (out_ours is None) == (out_theirs is None)
    assert ours.get_bias() is None and theirs.get_bias() is None
    assert (ours.get_lm_head() is None) == (theirs.get_lm_head() is None)
    for model in (ours, theirs):
        with pytest.warns(FutureWarning):
            assert model.get_prefix_bias_name() is None
        with pytest.warns(FutureWarning):
            assert model.get_output_layer_with_bias() is None
        model.set_bias({})  # no LM-head bias: a no-op in both


@pytest.mark.parametrize("new_size", [57, 44])
def test_resize_token_embeddings_matches_transformers(gpt2_dir, new_size):
    ours, theirs = TFGPT2LMHeadModel.from_pretrained(gpt2_dir), transformers.TFGPT2LMHeadModel.from_pretrained(gpt2_dir)
    old = np.asarray(ours.get_input_embeddings().weight).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb_ours, emb_theirs = ours.resize_token_embeddings(new_size), theirs.resize_token_embeddings(new_size)
    w_ours, w_theirs = np.asarray(emb_ours.weight), np.asarray(emb_theirs.weights[0])
    assert w_ours.shape == w_theirs.shape == (new_size, 16)
    rows = min(new_size, 50)
    np.testing.assert_array_equal(w_ours[:rows], old[:rows])
    np.testing.assert_array_equal(w_theirs[:rows], old[:rows])
    assert ours.config.vocab_size == theirs.config.vocab_size == new_size
    assert ours.num_parameters() == theirs.num_parameters()
    logits = ours(tf.constant([[1, 2, 3]])).logits  # the tied head follows the new table
    assert logits.shape == (1, 3, new_size)
    assert ours.resize_token_embeddings() is ours.get_input_embeddings()


def test_auto_classes(gpt2_dir, bert_dir, tmp_path):
    assert type(TFAutoModelForCausalLM.from_pretrained(gpt2_dir)) is TFGPT2LMHeadModel
    assert type(TFAutoModel.from_pretrained(gpt2_dir)) is TFGPT2Model
    model = TFAutoModel.from_pretrained(bert_dir, output_attentions=True)
    assert type(model) is TFBertModel and model.config.output_attentions is True
    assert len(model(tf.constant([[1, 2, 3]])).attentions) == 1
    with pytest.raises(ValueError, match="no TensorFlow class"):
        TFAutoModelForSeq2SeqLM.from_pretrained(gpt2_dir)
    torch.manual_seed(0)
    from pyengine.models.gpt2.modeling_torch import GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    assert type(TFAutoModelForCausalLM.from_pretrained(tmp_path, from_pt=True)) is TFGPT2LMHeadModel
