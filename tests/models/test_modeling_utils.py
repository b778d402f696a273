"""PreTrainedModel loading / saving / utilities against transformers 4.57, for every family.

Checkpoints move both ways (transformers → pyengine, pyengine → transformers) in every format; the loading
rules (kwargs, prefixes, missing / unexpected keys) are compared with what transformers itself reports.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.auto import AutoConfig, AutoModel, AutoModelForCausalLM  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

FORMATS = {
    "safetensors": {},
    "bin": {"safe_serialization": False},
    "sharded": {"max_shard_size": "200KB"},
}


def _ids(gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 1000, (2, 7), generator=gen)


def _assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert set(mine) == set(other)
    for name, tensor in other.items():
        assert torch.equal(mine[name], tensor), name


# -- checkpoints both ways ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@torch.no_grad()
def test_transformers_checkpoint_loads(family, fmt, tmp_path, gen):
    hf, _ = family.hf_pair()
    hf.save_pretrained(tmp_path, **FORMATS[fmt])
    if fmt == "sharded":
        assert any(name.endswith(".index.json") for name in os.listdir(tmp_path))
    ours, info = family.lm.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert not ours.training
    _assert_same_weights(ours, hf)
    ids = _ids(gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@torch.no_grad()
def test_our_checkpoint_loads_in_transformers(family, fmt, tmp_path, gen):
    _, ours = family.hf_pair(seed=1)
    ours.save_pretrained(tmp_path, **FORMATS[fmt])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [family.lm.__name__] and config["model_type"] == family.name
    hf, info = family.hf_lm.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    _assert_same_weights(ours, hf)
    ids = _ids(gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


def test_tied_weights_saved_once(families, tmp_path):
    from pyengine.checkpoints import load_state_dict

    _, ours = families["gpt2"].hf_pair()
    ours.save_pretrained(tmp_path)
    saved = load_state_dict([str(tmp_path / "model.safetensors")])
    assert "lm_head.weight" not in saved and "transformer.wte.weight" in saved


def test_generation_config_round_trip(families, tmp_path):
    _, ours = families["gpt2"].hf_pair()
    ours.save_pretrained(tmp_path)
    if ours.generation_config is None:
        pytest.skip("pyengine.generation_config is not available")
    assert (tmp_path / "generation_config.json").is_file()
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_length": 33, "eos_token_id": 7}))
    loaded = families["gpt2"].lm.from_pretrained(tmp_path)
    assert loaded.generation_config.max_length == 33


# -- from_pretrained keyword semantics -----------------------------------------------------------------------


@pytest.fixture
def saved(family, tmp_path):
    hf, _ = family.hf_pair()
    hf.save_pretrained(tmp_path)
    return family, tmp_path


def test_config_kwarg_overrides_config_and_reports_unexpected(saved, caplog):
    family, path = saved
    hf, hf_info = family.hf_lm.from_pretrained(path, output_loading_info=True, **{family.layers_key: 1})
    with caplog.at_level(logging.WARNING, logger="pyengine"):
        ours, info = family.lm.from_pretrained(path, output_loading_info=True, **{family.layers_key: 1})
    assert getattr(ours.config, family.layers_key) == 1 and ours.num_layers == 1
    assert info["unexpected_keys"] == hf_info["unexpected_keys"]
    assert info["unexpected_keys"] and all(".1." in key for key in info["unexpected_keys"])
    assert "were not used when initializing" in caplog.text


def test_unknown_kwarg_reaches_model_init(saved):
    family, path = saved
    with pytest.raises(TypeError, match="unexpected keyword argument 'not_a_config_field'"):
        family.hf_lm.from_pretrained(path, not_a_config_field=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'not_a_config_field'"):
        family.lm.from_pretrained(path, not_a_config_field=3)


def test_config_object_sends_kwargs_to_model(saved):
    family, path = saved
    config = family.config.from_pretrained(path)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        family.lm.from_pretrained(path, config=config, **{family.layers_key: 1})


@pytest.mark.parametrize("direction", ["base_to_lm", "lm_to_base"])
def test_base_model_prefix_handling(family, direction, tmp_path, caplog, gen):
    torch.manual_seed(0)
    src_cls, dst_hf, dst_ours = (
        (family.hf_base, family.hf_lm, family.lm) if direction == "base_to_lm" else (family.hf_lm, family.hf_base, family.base)
    )
    src_cls(family.hf_config(**family.kwargs)).save_pretrained(tmp_path)
    hf, hf_info = dst_hf.from_pretrained(tmp_path, output_loading_info=True)
    with caplog.at_level(logging.INFO, logger="pyengine"):
        ours, info = dst_ours.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == hf_info["missing_keys"]
    assert info["unexpected_keys"] == hf_info["unexpected_keys"]
    if info["missing_keys"]:
        assert "newly initialized" in caplog.text
    loaded = {k: v for k, v in hf.state_dict().items() if k not in hf_info["missing_keys"]}
    for name, tensor in loaded.items():
        assert torch.equal(ours.state_dict()[name], tensor), name
    for name in info["missing_keys"]:  # randomly initialised the transformers way: normal(0, 0.02)
        assert 0.01 < ours.state_dict()[name].std().item() < 0.03, name


def test_missing_weights_file_is_a_clear_oserror(family, tmp_path):
    family.config(**family.kwargs).save_pretrained(tmp_path)
    with pytest.raises(OSError, match="model.safetensors"):
        family.lm.from_pretrained(tmp_path)


def test_shape_mismatch_names_key_and_shapes(saved):
    family, path = saved
    with pytest.raises(RuntimeError, match=r"size mismatch for .*(wte|embed_tokens)\.weight.*\(1000, 64\).*\(500, 64\)"):
        family.lm.from_pretrained(path, vocab_size=500)
    model, info = family.lm.from_pretrained(path, vocab_size=500, ignore_mismatched_sizes=True, output_loading_info=True)
    assert info["mismatched_keys"] and model.get_input_embeddings().weight.shape == (500, 64)


@pytest.mark.parametrize("dtype", [torch.float16, "bfloat16", "auto", None])
def test_dtype(saved, dtype):
    family, path = saved
    model = family.lm.from_pretrained(path, dtype=dtype)
    expected = {None: torch.float32, "auto": torch.float32, "bfloat16": torch.bfloat16}.get(dtype, dtype)
    assert model.dtype == expected and model.new_cache(1, 4).keys[0].dtype == expected
    assert model.config.dtype == str(expected).removeprefix("torch.")
    assert torch.get_default_dtype() == torch.float32


def test_state_dict_argument(families, gen):
    fam = families["llama"]
    hf, _ = fam.hf_pair()
    ours = fam.lm.from_pretrained(None, config=fam.config(**fam.kwargs), state_dict=hf.state_dict())
    ids = _ids(gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


def test_gguf_file_supplies_config_and_weights(families, tmp_path, monkeypatch, gen):
    """`gguf_file=`: config and weights both come from the GGUF reader (stubbed here with a tiny model)."""
    import pyengine.checkpoints as checkpoints

    fam = families["llama"]
    hf, _ = fam.hf_pair()
    config_dict = fam.config(**fam.kwargs).to_dict()
    arrays = {k: v.numpy() for k, v in hf.state_dict().items()}
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    seen = []
    monkeypatch.setattr(checkpoints, "load_gguf_checkpoint", lambda p: (seen.append(p), (config_dict, arrays))[1])
    monkeypatch.setattr(checkpoints.gguf, "load_gguf_config", lambda p: config_dict)  # AutoConfig reads only this
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    assert type(ours) is fam.lm and seen and seen[-1] == str(tmp_path / "tiny.gguf")
    ids = _ids(gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


# -- auto classes -------------------------------------------------------------------------------------------


def test_auto_classes_pick_the_family(saved):
    family, path = saved
    assert type(AutoConfig.from_pretrained(path)) is family.config
    assert type(AutoModelForCausalLM.from_pretrained(path)) is family.lm
    assert type(AutoModel.from_pretrained(path)) is family.base
    model = AutoModelForCausalLM.from_pretrained(path, **{family.layers_key: 1})
    assert model.num_layers == 1
    assert type(AutoModelForCausalLM.from_config(family.config(**family.kwargs))) is family.lm


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(ValueError, match="not-a-model.*gpt2.*llama"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="supports: .*gpt2, llama"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="supports"):
        AutoConfig.for_model("not-a-model-either")


# -- utilities ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("new_size, pad_to", [(1010, None), (990, None), (1001, 64)])
@torch.no_grad()
def test_resize_token_embeddings(family, new_size, pad_to, gen):
    hf, ours = family.hf_pair()
    torch.manual_seed(7)
    hf.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to)
    torch.manual_seed(7)  # same draws for the new rows
    ours.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to)
    assert ours.config.vocab_size == hf.config.vocab_size == ours.get_input_embeddings().weight.shape[0]
    _assert_same_weights(ours, hf)  # old rows kept, new rows drawn alike
    tied = family.name == "gpt2"
    assert (ours.get_output_embeddings().weight is ours.get_input_embeddings().weight) == tied
    ids = torch.randint(0, min(new_size, 990), (2, 5), generator=gen)
    torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("exclude_embeddings", [False, True])
@pytest.mark.parametrize("only_trainable", [False, True])
def test_num_parameters(family, exclude_embeddings, only_trainable):
    hf, ours = family.hf_pair()
    kwargs = dict(exclude_embeddings=exclude_embeddings, only_trainable=only_trainable)
    assert ours.num_parameters(**kwargs) == hf.num_parameters(**kwargs)
    assert ours.base_model.num_parameters(**kwargs) == hf.base_model.num_parameters(**kwargs)


def test_mask_helpers_and_flops(families):
    hf, ours = families["gpt2"].hf_pair()
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(ours.invert_attention_mask(mask), hf.invert_attention_mask(mask))
    torch.testing.assert_close(ours.get_extended_attention_mask(mask, (2, 4)), hf.get_extended_attention_mask(mask, (2, 4)))
    ours.config.is_decoder = hf.config.is_decoder = True
    torch.testing.assert_close(ours.get_extended_attention_mask(mask, (2, 3)), hf.get_extended_attention_mask(mask, (2, 3)))
    inputs = {"input_ids": torch.zeros(2, 4, dtype=torch.long)}
    assert ours.estimate_tokens(inputs) == hf.estimate_tokens(inputs) == 8
    assert ours.floating_point_ops(inputs) == hf.floating_point_ops(inputs)
    assert ours.device == torch.device("cpu") and ours.dtype == torch.float32
    assert ours.can_generate() and not families["gpt2"].base.can_generate()


def test_legacy_gpt2_mask_buffers_are_ignored(families):
    """Old GPT-2 checkpoints (e.g. openai-community/gpt2) store `attn.bias` / `attn.masked_bias` buffers."""
    fam = families["gpt2"]
    hf, _ = fam.hf_pair()
    state = dict(hf.state_dict())
    for i in range(2):
        state[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    _, info = fam.lm.from_pretrained(None, config=fam.config(**fam.kwargs), state_dict=state, output_loading_info=True)
    assert info["unexpected_keys"] == [] and info["missing_keys"] == []
