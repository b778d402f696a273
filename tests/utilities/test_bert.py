"""BertModel against transformers 4.57: outputs, options, checkpoints both ways, loading rules.

Outputs are compared within the fp32 table (atol 1e-5); on CPU they are in fact bit-identical.
"""

from __future__ import annotations

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.auto import AutoConfig, AutoModel  # noqa: E402
from pyengine.models.bert import BertConfig, BertModel, convert  # noqa: E402
from tests.tolerances import TOLERANCES  # noqa: E402
from tests.utilities.conftest import BERT_KWARGS  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]
ATOL, RTOL = TOLERANCES["float32"]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.randint(0, 2, ids.shape, generator=gen)}


OPTIONS = {
    "plain": {},
    "position_ids": {"position_ids": torch.arange(3, 12)[None]},
    "head_mask_1d": {"head_mask": torch.tensor([1.0, 0.0, 1.0, 1.0])},
    "head_mask_2d": {"head_mask": torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])},
    "mask_3d": {"attention_mask": torch.ones(3, 9, 9).tril()},
    "all_outputs": {"output_attentions": True, "output_hidden_states": True},
}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
@torch.no_grad()
def test_outputs_match(option, attn):
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**BERT_KWARGS, attn_implementation=attn)).eval()
    ours = BertModel(BertConfig(**BERT_KWARGS, attn_implementation=attn)).eval()
    ours.load_state_dict(hf.state_dict())
    kwargs = {**_inputs(), **OPTIONS[option]}
    a, b = hf(**kwargs), ours(**kwargs)
    assert list(a.keys()) == list(b.keys())
    for key in a.keys():
        for x, y in zip(*(v if isinstance(v, tuple) else (v,) for v in (a[key], b[key]))):
            _close(y, x)


@torch.no_grad()
def test_tuple_outputs_inputs_embeds_and_no_pooler(bert_pair):
    hf, ours = bert_pair
    kwargs = _inputs(1)
    a = hf(**kwargs, output_hidden_states=True, return_dict=False)
    b = ours(**kwargs, output_hidden_states=True, return_dict=False)
    assert len(a) == len(b) == 3
    _close(b[0], a[0])
    _close(b[1], a[1])
    embeds = hf.embeddings.word_embeddings(kwargs["input_ids"])
    _close(ours(inputs_embeds=embeds).last_hidden_state, hf(inputs_embeds=embeds).last_hidden_state)
    torch.manual_seed(0)
    no_pool = BertModel(BertConfig(**BERT_KWARGS), add_pooling_layer=False).eval()
    assert no_pool.pooler is None and "pooler.dense.weight" not in no_pool.state_dict()
    assert no_pool(kwargs["input_ids"]).pooler_output is None
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        ours()


def test_chunked_feed_forward_is_the_same(bert_pair):
    hf, ours = bert_pair
    kwargs = _inputs(2)
    full = ours(**kwargs).last_hidden_state
    ours.config.chunk_size_feed_forward = 4
    chunked = BertModel(ours.config).eval()
    chunked.load_state_dict(ours.state_dict())
    _close(chunked(**kwargs).last_hidden_state, full)


def test_init_matches_transformers_statistics():
    """Fresh models draw from the same init (std initializer_range, zero pad row, LayerNorm 1/0)."""
    model = BertModel(BertConfig(**BERT_KWARGS, initializer_range=0.5))
    emb = model.embeddings.word_embeddings.weight
    assert torch.all(emb[0] == 0) and 0.4 < emb[1:].std() < 0.6
    assert torch.all(model.embeddings.LayerNorm.weight == 1) and torch.all(model.pooler.dense.bias == 0)


@pytest.mark.parametrize("safe", [True, False])
@torch.no_grad()
def test_checkpoints_both_ways(bert_pair, tmp_path, safe):
    hf, ours = bert_pair
    kwargs = _inputs(3)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    loaded = BertModel.from_pretrained(tmp_path / "hf")
    _close(loaded(**kwargs).last_hidden_state, hf(**kwargs).last_hidden_state)
    ours.save_pretrained(tmp_path / "ours", safe_serialization=safe)
    assert (tmp_path / "ours" / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    theirs, info = transformers.BertModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    _close(theirs(**kwargs).pooler_output, ours(**kwargs).pooler_output)
    assert type(AutoModel.from_pretrained(tmp_path / "ours")) is BertModel
    assert type(AutoConfig.from_pretrained(tmp_path / "hf")) is BertConfig


@torch.no_grad()
def test_task_checkpoint_and_legacy_layernorm_names(tmp_path, caplog):
    """A BertForMaskedLM checkpoint (prefix `bert.`, `cls.*` head) with TF-era `gamma`/`beta` names."""
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(transformers.BertConfig(**BERT_KWARGS)).eval()
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in mlm.state_dict().items()}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pyengine"):
        ours, info = BertModel.from_pretrained(None, config=BertConfig(**BERT_KWARGS), state_dict=state,
                                               output_loading_info=True)  # fmt: skip
    hf, hf_info = transformers.BertModel.from_pretrained(
        None, config=transformers.BertConfig(**BERT_KWARGS), state_dict=state, output_loading_info=True
    )
    assert info["missing_keys"] == hf_info["missing_keys"]
    # transformers lists unexpected keys under their file names, we under the modern ones (gamma -> weight)
    assert sorted(info["unexpected_keys"]) == sorted(convert.pt_name(k) for k in hf_info["unexpected_keys"])
    ids = _inputs(4)["input_ids"]
    assert torch.equal(ours(ids).last_hidden_state, hf(ids).last_hidden_state)


def test_unsupported_configs_fail_clearly():
    with pytest.raises(NotImplementedError, match="cross-attention"):
        BertModel(BertConfig(**BERT_KWARGS, is_decoder=True, add_cross_attention=True))
    with pytest.raises(NotImplementedError, match="relative_key"):
        BertModel(BertConfig(**BERT_KWARGS, position_embedding_type="relative_key"))
