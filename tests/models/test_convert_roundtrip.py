"""Name maps between our PyTorch parameters and the TF / Flax layouts lose nothing.

Random values everywhere (biases included: a fresh model's zero biases would hide a dropped one): our
state dict -> TF or Flax names -> back must give every parameter back unchanged, except the ones the
other layout does not store (tied heads, attention-mask buffers).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from pyengine.models.bert import BertConfig, BertModel
from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel
from pyengine.models.llama import LlamaConfig, LlamaForCausalLM
from pyengine.models.t5 import T5Config, T5ForConditionalGeneration

MODELS = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  tie_word_embeddings=False)),  # fmt: skip
    "t5": lambda: T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                                      num_heads=4)),  # fmt: skip
    "bert": lambda: BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=16)),  # fmt: skip
}
TIED = {"lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}


@pytest.mark.parametrize("layout", ["flax", "tf"])
@pytest.mark.parametrize("family", sorted(MODELS))
def test_round_trip_keeps_every_stored_parameter(family, layout):
    torch.manual_seed(0)
    model = MODELS[family]()
    state = {k: torch.randn_like(v).numpy() for k, v in model.state_dict().items()}
    convert = importlib.import_module(f"pyengine.models.{family}.convert")
    there = getattr(convert, f"pt_to_{layout}")(state)
    back = type(model)._convert_state_dict(getattr(convert, f"{layout}_to_pt")(there))  # checkpoint -> our names
    prefix = model.base_model_prefix + "."  # a base model's checkpoint may carry its head-model prefix
    back = {k.removeprefix(prefix) if k not in state else k: v for k, v in back.items()}
    lost = set(state) - set(back)
    assert all(k in TIED or k.endswith((".attn.bias", ".attn.masked_bias")) for k in lost), sorted(lost)
    for name, array in back.items():
        np.testing.assert_array_equal(np.asarray(array).reshape(state[name].shape), state[name], err_msg=name)
