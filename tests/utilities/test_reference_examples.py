"""The `PreTrainedModel.from_pretrained` examples of the reference (models-api.txt), written with BERT.

Hub names are replaced by local folders written by transformers (tiny random BERT), since the Hub is not
reachable; the hub path itself is covered by test_hub.py against a local server.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine import BertConfig, BertModel  # noqa: E402
from tests.utilities.conftest import BERT_KWARGS  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


@pytest.fixture(scope="module")
def bert_base_uncased(tmp_path_factory):
    """Stands in for 'bert-base-uncased': a folder as transformers' save_pretrained writes it."""
    path = tmp_path_factory.mktemp("bert-base-uncased")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**BERT_KWARGS)).save_pretrained(path)
    return path


def test_download_model_and_configuration(bert_base_uncased):
    # >>> model = BertModel.from_pretrained('bert-base-uncased')
    model = BertModel.from_pretrained(bert_base_uncased)
    assert not model.training and isinstance(model.config, BertConfig)


def test_model_saved_with_save_pretrained(bert_base_uncased, tmp_path):
    # >>> model = BertModel.from_pretrained('./test/saved_model/')
    saved = tmp_path / "test" / "saved_model"
    BertModel.from_pretrained(bert_base_uncased).save_pretrained(saved)
    model = BertModel.from_pretrained(f"{saved}/")
    reference = transformers.BertModel.from_pretrained(bert_base_uncased)
    ids = torch.tensor([[2, 7, 8, 3]])
    assert torch.equal(model(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_update_configuration_during_loading(bert_base_uncased):
    # >>> model = BertModel.from_pretrained('bert-base-uncased', output_attentions=True)
    # >>> assert model.config.output_attentions == True
    model = BertModel.from_pretrained(bert_base_uncased, output_attentions=True)
    assert model.config.output_attentions is True
    assert len(model(torch.tensor([[2, 3]])).attentions) == 2


# The from_tf example (`BertModel.from_pretrained('./tf_model/my_tf_checkpoint.ckpt.index', from_tf=True,
# config=config)`) runs in tests/tf/test_bert_tf.py::test_from_tf_into_torch_h5_and_tf1_checkpoint, which
# writes the TF1 checkpoint with TensorFlow.


def test_loading_from_flax_checkpoint(bert_base_uncased, tmp_path):
    # >>> model = BertModel.from_pretrained('bert-base-uncased', from_flax=True)
    folder = tmp_path / "bert-base-uncased"
    transformers.FlaxBertModel.from_pretrained(bert_base_uncased, from_pt=True).save_pretrained(folder)
    assert (folder / "flax_model.msgpack").exists() and not (folder / "model.safetensors").exists()
    model = BertModel.from_pretrained(folder, from_flax=True)
    reference = transformers.BertModel.from_pretrained(bert_base_uncased)
    ids = torch.tensor([[2, 7, 8, 3]])
    torch.testing.assert_close(model(ids).last_hidden_state, reference(ids).last_hidden_state, rtol=0, atol=1e-6)
