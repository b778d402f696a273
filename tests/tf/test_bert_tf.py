"""TF BERT: tf_model.h5 both ways with transformers 4.57's TFBertModel, from_pt from our PyTorch BERT, from_tf
into our PyTorch BERT (tf_model.h5 and a TF1 `.ckpt.index` as in the reference example), head pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.backends.tf import tf
from pyengine.models.bert.config import BertConfig
from pyengine.models.bert.modeling_tf import TFBertModel
from pyengine.models.bert.modeling_torch import BertModel

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
           max_position_embeddings=32)  # fmt: skip
IDS = np.array([[2, 7, 9, 4, 0], [3, 5, 8, 1, 6]])
MASK = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Our PyTorch BERT (random) saved, and the TF model loaded from it with from_pt."""
    torch.manual_seed(0)
    pt = BertModel(BertConfig(**CFG)).eval()
    path = tmp_path_factory.mktemp("bert_pt")
    pt.save_pretrained(path)
    return pt, TFBertModel.from_pretrained(path, from_pt=True), path


def _pt_out(pt):
    with torch.no_grad():
        return pt(torch.tensor(IDS), attention_mask=torch.tensor(MASK))


def test_from_pt_matches_torch(ckpt):
    pt, tfm, _ = ckpt
    expected = _pt_out(pt)
    got = tfm(tf.constant(IDS), attention_mask=tf.constant(MASK))
    np.testing.assert_allclose(got.last_hidden_state.numpy(), expected.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.pooler_output.numpy(), expected.pooler_output.numpy(), atol=1e-4)


def test_h5_both_ways_with_transformers(ckpt, tmp_path):
    _, tfm, _ = ckpt
    tfm.save_pretrained(tmp_path / "ours")
    theirs = transformers.TFBertModel.from_pretrained(tmp_path / "ours")
    expected = tfm(tf.constant(IDS), attention_mask=tf.constant(MASK)).last_hidden_state.numpy()
    np.testing.assert_allclose(theirs(tf.constant(IDS), attention_mask=tf.constant(MASK)).last_hidden_state.numpy(),
                               expected, atol=1e-5)  # fmt: skip
    theirs.save_pretrained(tmp_path / "theirs")
    back, info = TFBertModel.from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    np.testing.assert_allclose(back(tf.constant(IDS), attention_mask=tf.constant(MASK)).last_hidden_state.numpy(),
                               expected, atol=1e-6)  # fmt: skip


def test_from_tf_into_torch_h5_and_tf1_checkpoint(ckpt, tmp_path):
    """The reference example: `BertModel.from_pretrained('./tf_model/my_tf_checkpoint.ckpt.index', from_tf=True,
    config=config)`, with a TF1 checkpoint written here in the original BERT release's variable names."""
    pt, tfm, _ = ckpt
    tfm.save_pretrained(tmp_path / "h5")
    from_h5 = BertModel.from_pretrained(tmp_path / "h5", from_tf=True)
    for name, value in pt.state_dict().items():
        torch.testing.assert_close(from_h5.state_dict()[name], value, rtol=0, atol=0, msg=name)

    tf1 = {}
    for name, var in tfm.tf_weights():  # TF2 names → the TF1 release's names
        n = name.removesuffix(":0").replace("layer_._", "layer_")
        n = n.replace("word_embeddings/weight", "word_embeddings").replace("_embeddings/embeddings", "_embeddings")
        tf1[n] = var.numpy()
    prefix = str(tmp_path / "tf1" / "my_tf_checkpoint.ckpt")
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in tf1.items()]
        variables.append(tf.compat.v1.Variable(7, name="global_step"))
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix)
    config = BertConfig(**CFG)
    model = BertModel.from_pretrained(prefix + ".index", from_tf=True, config=config)
    expected = _pt_out(pt).last_hidden_state
    with torch.no_grad():
        got = model(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_prune_heads_matches_torch_and_reloads_pruned(ckpt, tmp_path):
    """transformers' TF BERT raises NotImplementedError here; ours prunes as the PyTorch model does."""
    _, _, path = ckpt
    heads = {0: [1, 3], 1: [0]}
    pt = BertModel.from_pretrained(path).eval()
    pt.prune_heads(heads)
    tfm = TFBertModel.from_pretrained(path, from_pt=True)
    before = tfm.num_parameters()
    tfm.prune_heads(heads)
    assert tfm.num_parameters() == sum(p.numel() for p in pt.parameters()) < before
    got = tfm(tf.constant(IDS), attention_mask=tf.constant(MASK)).last_hidden_state.numpy()
    np.testing.assert_allclose(got, _pt_out(pt).last_hidden_state.numpy(), atol=1e-4)
    tfm.save_pretrained(tmp_path)
    again = TFBertModel.from_pretrained(tmp_path)
    assert again.config.pruned_heads == {0: [1, 3], 1: [0]} or again.config.pruned_heads == {"0": [1, 3], "1": [0]}
    np.testing.assert_allclose(again(tf.constant(IDS), attention_mask=tf.constant(MASK)).last_hidden_state.numpy(),
                               got, atol=1e-6)  # fmt: skip
    with pytest.raises(NotImplementedError):
        transformers.TFBertModel.from_pretrained(path, from_pt=True).prune_heads(heads)


def test_reference_from_pretrained_examples(ckpt, tmp_path):
    """TFPreTrainedModel.from_pretrained's examples, with local folders in place of hub names."""
    _, tfm, path = ckpt
    tfm.save_pretrained(tmp_path / "saved_model")
    model = TFBertModel.from_pretrained(str(tmp_path / "saved_model") + "/")
    assert model.num_parameters() == tfm.num_parameters()
    model = TFBertModel.from_pretrained(tmp_path / "saved_model", output_attentions=True)
    assert model.config.output_attentions is True
    # Loading from a PyTorch weights file with a config read from JSON.
    config = BertConfig.from_json_file(path / "config.json")
    weights = next(p for p in path.iterdir() if p.suffix in (".bin", ".safetensors"))
    model = TFBertModel.from_pretrained(weights, from_pt=True, config=config)
    np.testing.assert_array_equal(model(tf.constant(IDS)).last_hidden_state.numpy(),
                                  tfm(tf.constant(IDS)).last_hidden_state.numpy())  # fmt: skip
