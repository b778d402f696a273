"""TF LLaMA against our PyTorch LLaMA (transformers has no TF LLaMA): same weights through from_pt, logits
within 1e-4, greedy / beam tokens equal eager and XLA, tf_model.h5 round trip, from_tf into PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyengine.backends.tf import kernels, tf
from pyengine.models.llama.config import LlamaConfig
from pyengine.models.llama.modeling_tf import TFLlamaForCausalLM
from pyengine.models.llama.modeling_torch import LlamaForCausalLM

CFG = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
PROMPT = np.array([[0, 0, 5, 9, 13], [3, 4, 5, 6, 7]])
MASK = (np.arange(5)[None] >= np.array([[2], [0]])).astype(np.int32)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    pt = LlamaForCausalLM(LlamaConfig(**CFG, tie_word_embeddings=request.param)).eval()
    with torch.no_grad():
        for name, p in pt.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("llama_pt")
    pt.save_pretrained(path)
    return pt, TFLlamaForCausalLM.from_pretrained(path, from_pt=True), path


def test_logits_and_tokens_match_torch(pair):
    pt, tfm, _ = pair
    with torch.no_grad():
        expected = pt(torch.tensor(PROMPT), attention_mask=torch.tensor(MASK)).logits.numpy()
        greedy = pt.generate(torch.tensor(PROMPT), attention_mask=torch.tensor(MASK), max_new_tokens=8).numpy()
        beam = pt.generate(torch.tensor(PROMPT), attention_mask=torch.tensor(MASK), max_new_tokens=5,
                           num_beams=3).numpy()  # fmt: skip
    got = tfm(tf.constant(PROMPT), attention_mask=tf.constant(MASK)).logits.numpy()
    np.testing.assert_allclose(got[MASK == 1], expected[MASK == 1], atol=1e-4)
    for jit in (False, True) if tfm.config.tie_word_embeddings else (False,):  # XLA once: compiling is slow
        out = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), max_new_tokens=8, jit_compile=jit)
        np.testing.assert_array_equal(out.numpy(), greedy)
    out = tfm.generate(tf.constant(PROMPT), attention_mask=tf.constant(MASK), max_new_tokens=5, num_beams=3)
    np.testing.assert_array_equal(out.numpy(), beam)


def test_xla_batch_one_takes_the_layers_weights_as_they_are(pair, linear_calls):
    """At batch 1 under XLA a decode step's products are C++ calls over the `[in, out]` Dense kernels as
    they are (the tied head over the `[V, E]` table); tokens stay equal to PyTorch's."""
    pt, tfm, _ = pair
    prompt = PROMPT[1:]
    with torch.no_grad():
        expected = pt.generate(torch.tensor(prompt), max_new_tokens=6, do_sample=False).numpy()
    got = tfm.generate(tf.constant(prompt), max_new_tokens=6, jit_compile=True).numpy()
    np.testing.assert_array_equal(got, expected)
    if kernels.linear_impl().label == "cpp":
        tied = tfm.config.tie_word_embeddings
        # traced once: 7 products a layer in the step, and the head over one row in prefill and in the step (a
        # tied head's step takes the screened top logits instead)
        head = [(1, not tied)] * (1 if tied else 2)
        assert sorted(linear_calls) == sorted([(1, True)] * 7 * tfm.config.num_hidden_layers + head), linear_calls


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_k=6, temperature=0.8)])
def test_xla_screened_head_keeps_the_tokens(pair, screened_and_full, kwargs):
    """Batch 2 under XLA: the head's int8 screen (the tied table, or the untied head's `[out, in]` copy) gives
    the full head's tokens, draw for draw."""
    screened, full = screened_and_full(pair[1], PROMPT, MASK, max_new_tokens=8, seed=3, **kwargs)
    np.testing.assert_array_equal(screened, full)


def test_h5_round_trip_and_from_tf_into_torch(pair, tmp_path):
    pt, tfm, _ = pair
    tfm.save_pretrained(tmp_path)
    back, info = TFLlamaForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    for (name, a), (_, b) in zip(tfm.tf_weights(), back.tf_weights()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    pt_back = LlamaForCausalLM.from_pretrained(tmp_path, from_tf=True)
    for (name, a), (_, b) in zip(pt.state_dict().items(), pt_back.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
