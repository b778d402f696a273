"""Head pruning against transformers 4.57: the helpers, BERT and GPT-2, and reloading a pruned checkpoint.

A pruned model must keep transformers' weights and outputs exactly, record `config.pruned_heads` as lists
(JSON), and come back pruned from `save_pretrained` in both libraries, whichever wrote it. GPT-2 also
generates after pruning (its KV cache gets per-layer head counts). T5 prunes encoder self-attention heads
(transformers 4.57 only manages it in T5EncoderModel; ours also in T5Model / T5ForConditionalGeneration, and
reloads). LLaMA refuses with a clear error.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers import pytorch_utils  # noqa: E402

from pyengine.modeling_utils import (  # noqa: E402
    find_pruneable_heads_and_indices,
    prune_conv1d_layer,
    prune_layer,
    prune_linear_layer,
)
from pyengine.models.bert import BertModel  # noqa: E402
from pyengine.models.gpt2 import GPT2LMHeadModel  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

PRUNE = {0: [0, 2], 1: [3]}


def _assert_same_state(ours: nn.Module, theirs: nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert set(mine) == set(other)
    for name, tensor in other.items():
        assert mine[name].shape == tensor.shape and torch.equal(mine[name], tensor), name


@pytest.mark.parametrize("heads, already", [([1], set()), ([0, 3], {1}), ([1, 2], {1}), ([], {0, 2})])
def test_find_pruneable_heads_and_indices(heads, already):
    got = find_pruneable_heads_and_indices(heads, 4 - len(already), 3, already)
    expected = pytorch_utils.find_pruneable_heads_and_indices(heads, 4 - len(already), 3, already)
    assert got[0] == expected[0] and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("dim", [0, 1])
def test_prune_linear_and_conv1d_layers(dim):
    torch.manual_seed(0)
    linear = nn.Linear(6, 8)
    index = torch.tensor([0, 2, 5])
    got, expected = prune_linear_layer(linear, index, dim), pytorch_utils.prune_linear_layer(linear, index, dim)
    assert torch.equal(got.weight, expected.weight) and torch.equal(got.bias, expected.bias)
    assert got.weight.requires_grad and (got.in_features, got.out_features) == (expected.in_features, expected.out_features)
    conv = pytorch_utils.Conv1D(8, 6)  # weight [in=6, out=8]
    got, expected = prune_conv1d_layer(conv, index, 1 - dim), pytorch_utils.prune_conv1d_layer(conv, index, 1 - dim)
    assert type(got) is type(conv) and torch.equal(got.weight, expected.weight) and torch.equal(got.bias, expected.bias)
    assert torch.equal(prune_layer(linear, index).weight, pytorch_utils.prune_layer(linear, index).weight)
    with pytest.raises(ValueError, match="Can't prune"):
        prune_layer(nn.Embedding(3, 3), index)


@torch.no_grad()
def test_prune_bert(bert_pair):
    hf, ours = bert_pair
    hf.prune_heads(PRUNE)
    ours.prune_heads(PRUNE)
    hf.prune_heads({0: [2, 3]})  # union with what is already pruned; head 2 is skipped
    ours.prune_heads({0: [2, 3]})
    assert ours.config.pruned_heads == {0: [0, 2, 3], 1: [3]}
    assert {k: sorted(v) for k, v in hf.config.pruned_heads.items()} == ours.config.pruned_heads
    assert ours.encoder.layer[0].attention.self.num_attention_heads == 1
    _assert_same_state(ours, hf)
    ids, mask = torch.randint(1, 99, (2, 7)), torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    a = hf(ids, attention_mask=mask, output_attentions=True)
    b = ours(ids, attention_mask=mask, output_attentions=True)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(a.pooler_output, b.pooler_output)
    assert [x.shape[1] for x in b.attentions] == [1, 3]


@pytest.mark.parametrize("writer", ["ours", "transformers"])
@torch.no_grad()
def test_pruned_bert_reloads_pruned(bert_pair, tmp_path, writer):
    hf, ours = bert_pair
    hf.prune_heads(PRUNE)
    ours.prune_heads(PRUNE)
    (ours if writer == "ours" else hf).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["pruned_heads"]
    assert {int(k): sorted(v) for k, v in saved.items()} == {0: [0, 2], 1: [3]}
    reloaded, info = BertModel.from_pretrained(tmp_path, output_loading_info=True)
    hf_reloaded = transformers.BertModel.from_pretrained(tmp_path)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert reloaded.encoder.layer[0].attention.pruned_heads == {0, 2}
    _assert_same_state(reloaded, hf)
    _assert_same_state(hf_reloaded, reloaded)
    ids = torch.randint(1, 99, (2, 5))
    assert torch.equal(reloaded(ids).last_hidden_state, hf(ids).last_hidden_state)


@torch.no_grad()
def test_prune_gpt2_forward_generate_reload(gpt2_pair, tmp_path):
    hf, ours = gpt2_pair
    hf.prune_heads(PRUNE)
    ours.prune_heads(PRUNE)
    assert ours.config.pruned_heads == {0: [0, 2], 1: [3]}
    _assert_same_state(ours, hf)
    ids = torch.randint(0, 100, (2, 6))
    assert torch.equal(ours(ids).logits, hf(ids).logits)  # use_cache on by default: per-layer cache heads
    assert torch.equal(ours(ids, use_cache=False).logits, hf(ids, use_cache=False).logits)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids, **settings), hf.generate(ids, **settings))
    assert torch.equal(ours.generate(ids, num_beams=3, **settings), hf.generate(ids, num_beams=3, **settings))
    ours.save_pretrained(tmp_path)
    for cls in (GPT2LMHeadModel, transformers.GPT2LMHeadModel):
        reloaded = cls.from_pretrained(tmp_path)
        assert torch.equal(reloaded(ids).logits, hf(ids).logits), cls


def test_families_without_pruning():
    from pyengine.models.llama import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    with pytest.raises(NotImplementedError, match="LlamaModel does not support head pruning"):
        llama.prune_heads({0: [1]})


T5_KWARGS = dict(vocab_size=60, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)


@torch.no_grad()
def test_prune_t5_encoder_like_transformers():
    from pyengine.models.t5 import T5Config, T5EncoderModel

    torch.manual_seed(0)
    hf = transformers.T5EncoderModel(transformers.T5Config(**T5_KWARGS)).eval()
    ours = T5EncoderModel(T5Config(**T5_KWARGS)).eval()
    ours.load_state_dict(hf.state_dict())
    hf.prune_heads(PRUNE)
    ours.prune_heads(PRUNE)
    _assert_same_state(ours, hf)
    ids, mask = torch.randint(1, 60, (2, 7)), torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    want = hf(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours(ids, attention_mask=mask).last_hidden_state, want, rtol=0, atol=1e-6)


@torch.no_grad()
def test_pruned_t5_generates_and_reloads_pruned(tmp_path):
    from pyengine.models.t5 import T5Config, T5ForConditionalGeneration

    torch.manual_seed(1)
    model = T5ForConditionalGeneration(T5Config(**T5_KWARGS)).eval()
    ids = torch.randint(1, 60, (2, 6))
    before = model(ids, decoder_input_ids=torch.zeros(2, 1, dtype=torch.long)).logits
    model.prune_heads(PRUNE)
    attn = model.encoder.block[0].layer[0].SelfAttention
    assert (attn.n_heads, attn.q.weight.shape) == (2, (16, 32)) and model.config.pruned_heads == PRUNE
    after = model(ids, decoder_input_ids=torch.zeros(2, 1, dtype=torch.long)).logits
    assert not torch.allclose(before, after)  # the pruned heads did contribute
    out = model.generate(ids, max_new_tokens=5, num_beams=2)
    model.save_pretrained(tmp_path)
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.encoder.block[1].layer[0].SelfAttention.n_heads == 3
    assert torch.equal(reloaded.generate(ids, max_new_tokens=5, num_beams=2), out)
