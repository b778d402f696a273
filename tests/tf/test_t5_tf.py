"""TF T5 against our PyTorch T5 (same weights via from_pt) and transformers 4.57's TF T5 (same files):
logits within 1e-4, greedy / beam tokens equal eager and XLA, tf_model.h5 both ways, tied and untied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.backends.tf import tf
from pyengine.models.t5.config import T5Config
from pyengine.models.t5.modeling_tf import TFT5ForConditionalGeneration
from pyengine.models.t5.modeling_torch import T5ForConditionalGeneration

transformers = pytest.importorskip("transformers")

CFG = dict(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
IDS = np.array([[5, 9, 13, 22, 1], [3, 4, 1, 0, 0]])
MASK = (IDS != 0).astype(np.int32)
MASK[0] = 1


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    pt = T5ForConditionalGeneration(T5Config(**CFG, tie_word_embeddings=request.param,
                                             feed_forward_proj="relu" if request.param else "gated-gelu")).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in pt.named_parameters():
            if "layer_norm" not in name:
                p.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("t5_pt")
    pt.save_pretrained(path)
    return pt, TFT5ForConditionalGeneration.from_pretrained(path, from_pt=True)


def test_logits_and_tokens_match_torch(pair):
    pt, tfm = pair
    dec = np.array([[0, 7, 3], [0, 2, 9]])
    with torch.no_grad():
        expected = pt(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                      decoder_input_ids=torch.tensor(dec)).logits.numpy()  # fmt: skip
        greedy = pt.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=7).numpy()
        beam = pt.generate(torch.tensor(IDS), attention_mask=torch.tensor(MASK), max_new_tokens=5, num_beams=3,
                           num_return_sequences=2).numpy()  # fmt: skip
    got = tfm(tf.constant(IDS), attention_mask=tf.constant(MASK), decoder_input_ids=tf.constant(dec)).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for jit in (False, True) if tfm.config.tie_word_embeddings else (False,):  # XLA once: compiling is slow
        out = tfm.generate(tf.constant(IDS), attention_mask=tf.constant(MASK), max_new_tokens=7, jit_compile=jit)
        np.testing.assert_array_equal(out.numpy(), greedy)
    out = tfm.generate(tf.constant(IDS), attention_mask=tf.constant(MASK), max_new_tokens=5, num_beams=3,
                       num_return_sequences=2)  # fmt: skip
    np.testing.assert_array_equal(out.numpy(), beam)


def test_h5_both_ways_with_transformers(pair, tmp_path):
    _, tfm = pair
    dec = tf.constant([[0, 7, 3], [0, 2, 9]])
    expected = tfm(tf.constant(IDS), attention_mask=tf.constant(MASK), decoder_input_ids=dec).logits.numpy()
    tfm.save_pretrained(tmp_path / "ours")
    theirs = transformers.TFT5ForConditionalGeneration.from_pretrained(tmp_path / "ours")
    got = theirs(tf.constant(IDS), attention_mask=tf.constant(MASK), decoder_input_ids=dec).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    theirs.save_pretrained(tmp_path / "theirs")
    back, info = TFT5ForConditionalGeneration.from_pretrained(tmp_path / "theirs", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    got = back(tf.constant(IDS), attention_mask=tf.constant(MASK), decoder_input_ids=dec).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
