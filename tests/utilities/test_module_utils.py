"""ModuleUtilsMixin and the small PreTrainedModel properties, against transformers 4.57 on the same models.

Counts, token estimates, FLOPs, every mask helper (2-D/3-D, encoder/decoder, with past keys, dtypes), the
head mask in each accepted shape, device / dtype / dummy_inputs / base_model / is_parallelizable, and the
memory hooks (with psutil, and with the fallback when psutil is missing).
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.modeling_mixins import current_rss_bytes  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]


@pytest.mark.parametrize("only_trainable", [False, True])
@pytest.mark.parametrize("exclude_embeddings", [False, True])
def test_num_parameters_bert(bert_pair, only_trainable, exclude_embeddings):
    hf, ours = bert_pair
    kwargs = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
    assert ours.num_parameters(**kwargs) == hf.num_parameters(**kwargs)
    ours.embeddings.requires_grad_(False)
    hf.embeddings.requires_grad_(False)
    assert ours.num_parameters(**kwargs) == hf.num_parameters(**kwargs)


def test_num_parameters_counts_tied_weights_once(gpt2_pair):
    hf, ours = gpt2_pair
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert ours.num_parameters() == hf.num_parameters() == sum(p.numel() for p in ours.parameters())


def test_estimate_tokens_and_flops(bert_pair, caplog):
    hf, ours = bert_pair
    inputs = {"input_ids": torch.zeros(3, 7, dtype=torch.long), "attention_mask": torch.ones(3, 7)}
    assert ours.estimate_tokens(inputs) == hf.estimate_tokens(inputs) == 21
    for exclude in (True, False):
        assert ours.floating_point_ops(inputs, exclude) == hf.floating_point_ops(inputs, exclude)
    assert ours.floating_point_ops(inputs) == 6 * 21 * ours.num_parameters(exclude_embeddings=True)
    with caplog.at_level(logging.WARNING, logger="pyengine"):
        assert ours.estimate_tokens({"inputs_embeds": torch.zeros(1, 2, 64)}) == 0
        assert ours.floating_point_ops({"inputs_embeds": torch.zeros(1, 2, 64)}) == 0
    assert sum("Could not estimate" in r.message for r in caplog.records) == 1  # warned once


MASKS = {
    "2d": torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]]),
    "3d": torch.tensor([[[1, 0, 1, 1]] * 4, [[1, 1, 0, 1]] * 4]),
}


@pytest.mark.parametrize("is_decoder", [False, True])
@pytest.mark.parametrize("kind", sorted(MASKS))
@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_extended_attention_mask(bert_pair, is_decoder, kind, dtype):
    hf, ours = bert_pair
    hf.config.is_decoder = ours.config.is_decoder = is_decoder
    mask = MASKS[kind]
    expected = hf.get_extended_attention_mask(mask, (2, 4), dtype=dtype)
    got = ours.get_extended_attention_mask(mask, (2, 4), dtype=dtype)
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_decoder_mask_with_past_keys(bert_pair):
    """A mask longer than the input (cached keys) leaves the past visible to every new query."""
    hf, ours = bert_pair
    hf.config.is_decoder = ours.config.is_decoder = True
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(ours.get_extended_attention_mask(mask, (2, 2)), hf.get_extended_attention_mask(mask, (2, 2)))
    causal = ours.create_extended_attention_mask_for_decoder((2, 2), mask)
    assert torch.equal(causal, type(hf).create_extended_attention_mask_for_decoder((2, 2), mask))


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_invert_attention_mask(bert_pair, kind):
    hf, ours = bert_pair
    assert torch.equal(ours.invert_attention_mask(MASKS[kind]), hf.invert_attention_mask(MASKS[kind]))
    ours.half()
    hf.half()
    assert torch.equal(ours.invert_attention_mask(MASKS[kind]), hf.invert_attention_mask(MASKS[kind]))


@pytest.mark.parametrize("shape", [None, (4,), (2, 4)])
@pytest.mark.parametrize("chunked", [False, True])
def test_get_head_mask(bert_pair, shape, chunked):
    hf, ours = bert_pair
    head_mask = None if shape is None else (torch.rand(shape) > 0.5).float()
    got = ours.get_head_mask(head_mask, 2, is_attention_chunked=chunked)
    expected = hf.get_head_mask(head_mask, 2, is_attention_chunked=chunked)
    if shape is None:
        assert got == expected == [None, None]
    else:
        assert got.shape == expected.shape and got.dtype == expected.dtype and torch.equal(got, expected)


def test_properties(bert_pair, gpt2_pair):
    hf, ours = bert_pair
    assert ours.device == hf.device == torch.device("cpu")
    assert ours.dtype == hf.dtype == torch.float32
    assert ours.half().dtype == hf.half().dtype == torch.float16
    assert torch.equal(ours.dummy_inputs["input_ids"], hf.dummy_inputs["input_ids"])
    assert ours.base_model is ours and hf.base_model is hf
    hf_lm, lm = gpt2_pair
    assert lm.base_model is lm.transformer and hf_lm.base_model is hf_lm.transformer
    assert ours.is_parallelizable == hf.is_parallelizable is False
    assert lm(**lm.dummy_inputs).logits.shape == (3, 5, 100)


def _check_memory_hooks(model) -> None:
    model.add_memory_hooks()
    assert all(m.mem_rss_diff == 0 for m in model.modules())
    model(**model.dummy_inputs)
    assert all(isinstance(m.mem_rss_diff, int) for m in model.modules())
    ran = [model] + [m for m in model.modules() if isinstance(m, torch.nn.Linear)]  # containers may not run
    assert all(m.mem_rss_pre_forward > 0 and m.mem_rss_post_forward > 0 for m in ran)
    model.reset_memory_hooks_state()
    assert all(m.mem_rss_diff == m.mem_rss_pre_forward == m.mem_rss_post_forward == 0 for m in model.modules())


def test_memory_hooks(bert_pair):
    hf, ours = bert_pair
    _check_memory_hooks(ours)
    _check_memory_hooks(hf)  # same attributes as transformers' hooks set


def test_memory_hooks_without_psutil(bert_pair, monkeypatch):
    """transformers raises ImportError without psutil; we fall back to /proc or getrusage."""
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert current_rss_bytes() > 0
    _check_memory_hooks(bert_pair[1])
