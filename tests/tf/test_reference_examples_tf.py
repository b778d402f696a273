"""The reference document's TFGenerationMixin.generate examples, run as written on a tiny local checkpoint
(TFAutoModelForCausalLM in place of TFAutoModelWithLMHead, token ids in place of the tokenizer). The
deterministic ones must give our PyTorch model's tokens on the same weights; the sampling ones must honour
their constraints (length, bad words) and be reproducible with a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.backends.tf import tf
from pyengine.models.auto_tf import TFAutoModelForCausalLM
from pyengine.models.gpt2.config import GPT2Config
from pyengine.models.gpt2.modeling_torch import GPT2LMHeadModel

INPUT_CONTEXT = [[11, 23, 5]]  # 'The dog' / 'My cute dog' as ids


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(1)
    pt = GPT2LMHeadModel(GPT2Config(vocab_size=80, n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
                                    eos_token_id=2)).eval()  # fmt: skip
    with torch.no_grad():
        for name, p in pt.named_parameters():
            if "ln" not in name:
                p.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    pt.save_pretrained(path)
    TFAutoModelForCausalLM.from_pretrained(path, from_pt=True).save_pretrained(path)  # now with tf_model.h5
    return pt, TFAutoModelForCausalLM.from_pretrained(path)


def _pt(pt, input_ids=None, **kwargs):
    with torch.no_grad():
        return pt.generate(None if input_ids is None else torch.tensor(input_ids), **kwargs).numpy()


def test_greedy_from_bos(models):
    pt, model = models
    outputs = model.generate(max_length=40)  # do greedy decoding
    np.testing.assert_array_equal(outputs.numpy(), _pt(pt, max_length=40))
    assert outputs.shape[1] <= 40 and outputs.numpy()[0, 0] == 1


def test_beam_search_three_sequences(models):
    pt, model = models
    input_ids = tf.constant(INPUT_CONTEXT)
    with pytest.warns(UserWarning):  # temperature without do_sample is ignored (transformers warns the same)
        outputs = model.generate(input_ids=input_ids, num_beams=5, num_return_sequences=3, temperature=1.5)
    assert outputs.shape[0] == 3
    expected = _pt(pt, INPUT_CONTEXT, num_beams=5, num_return_sequences=3, temperature=1.5)
    np.testing.assert_array_equal(outputs.numpy(), expected)


def test_sampling_three_candidates(models):
    _, model = models
    input_ids = tf.constant(INPUT_CONTEXT)
    outputs = model.generate(input_ids=input_ids, max_length=40, temperature=0.7, num_return_sequences=3,
                             do_sample=True, seed=0)  # fmt: skip
    again = model.generate(input_ids=input_ids, max_length=40, temperature=0.7, num_return_sequences=3,
                           do_sample=True, seed=0)  # fmt: skip
    assert outputs.shape[0] == 3 and outputs.shape[1] <= 40
    np.testing.assert_array_equal(outputs.numpy(), again.numpy())
    np.testing.assert_array_equal(outputs.numpy()[:, :3], np.repeat(INPUT_CONTEXT, 3, 0))


def test_repetition_penalty(models):
    pt, model = models
    outputs = model.generate(input_ids=tf.constant(INPUT_CONTEXT), max_length=50, temperature=0.7,
                             repetition_penalty=1.2)  # fmt: skip
    np.testing.assert_array_equal(outputs.numpy(), _pt(pt, INPUT_CONTEXT, max_length=50, temperature=0.7,
                                                       repetition_penalty=1.2))  # fmt: skip


def test_bad_words_never_generated(models):
    _, model = models
    bad_words_ids = [[7], [9], [13, 14]]
    outputs = model.generate(input_ids=tf.constant(INPUT_CONTEXT), max_length=100, do_sample=True,
                             bad_words_ids=bad_words_ids, seed=5).numpy()  # fmt: skip
    new = outputs[0, 3:].tolist()
    assert 7 not in new and 9 not in new
    assert all(not (a == 13 and b == 14) for a, b in zip(new, new[1:]))
