"""T5 (PyTorch) against transformers 4.57: logits and loss, padding, cached decoding, outputs, checkpoints.

Tiny random configs (d_model 64, d_ff 128, 4 heads of 16, 2 layers, vocab 500), for the original "relu"
feed-forward (tied, rescaled LM head) and the T5 v1.1 "gated-gelu" one (untied head, as Flan-T5).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pyengine.auto import AutoModel, AutoModelForSeq2SeqLM  # noqa: E402
from pyengine.backends.torch.cache import KVCache  # noqa: E402
from pyengine.modeling_outputs import BaseModelOutput  # noqa: E402
from pyengine.models.t5 import (  # noqa: E402
    EncoderDecoderCache,
    T5Config,
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Model,
)
from pyengine.models.t5.modeling_torch import relative_position_bucket  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

VOCAB = 500
KWARGS = dict(
    vocab_size=VOCAB, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, decoder_start_token_id=0
)
VARIANTS = {
    "relu": dict(feed_forward_proj="relu"),
    "gated-gelu": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
TOL = dict(atol=3e-5, rtol=1.3e-6)  # MKL picks other kernels on other CPUs: 1.1e-5 seen on Intel


def make_pair(variant: str = "relu", hf_cls=None, ours_cls=None, seed: int = 0, **overrides):
    """(transformers model, our model) with the same random weights, in eval mode."""
    kwargs = dict(KWARGS, **VARIANTS[variant], **overrides)
    torch.manual_seed(seed)
    hf = (hf_cls or transformers.T5ForConditionalGeneration)(transformers.T5Config(**kwargs)).eval()
    ours = (ours_cls or T5ForConditionalGeneration)(T5Config(**kwargs)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request):
    return make_pair(request.param)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def padded(
    gen: torch.Generator, pads: tuple[int, ...], length: int, side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, length]` ids (EOS-free, > 1) and mask with `pads[b]` pad tokens (id 0) on `side` of row b."""
    ids = torch.randint(2, VOCAB, (len(pads), length), generator=gen)
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        cols = slice(0, pad) if side == "left" else slice(length - pad, length)
        ids[row, cols], mask[row, cols] = 0, 0
    return ids, mask


def close_on_mask(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> None:
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], **TOL)


# -- structure and config ------------------------------------------------------------------------------------


def test_parameter_names_and_tying(pair):
    hf, ours = pair
    assert list(ours.state_dict()) == list(hf.state_dict())
    assert ours.encoder.embed_tokens.weight is ours.shared.weight is ours.decoder.embed_tokens.weight
    tied = ours.config.tie_word_embeddings
    assert (ours.lm_head.weight is ours.shared.weight) == tied
    assert not hasattr(ours.decoder.block[0].layer[1].EncDecAttention, "relative_attention_bias")
    assert not hasattr(ours.encoder.block[1].layer[0].SelfAttention, "relative_attention_bias")


def test_config_defaults_match_transformers():
    ours, theirs = T5Config().to_dict(), transformers.T5Config().to_dict()
    keys = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
            "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
            "layer_norm_epsilon", "initializer_factor", "feed_forward_proj", "dense_act_fn", "is_gated_act",
            "is_encoder_decoder", "use_cache", "pad_token_id", "eos_token_id", "decoder_start_token_id",
            "tie_word_embeddings", "classifier_dropout")  # fmt: skip
    for key in keys:
        assert ours[key] == theirs[key], key
    cfg = T5Config(num_layers=3, num_heads=2, d_model=32, d_kv=8, feed_forward_proj="gated-silu")
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.head_dim) == (32, 2, 3, 8)
    assert (cfg.num_decoder_layers, cfg.dense_act_fn, cfg.is_gated_act) == (3, "silu", True)
    with pytest.raises(ValueError, match="gated-"):
        T5Config(feed_forward_proj="very-gated-gelu")


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_exact(bidirectional):
    relative = torch.arange(-300, 300)[None, :]
    theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        relative, bidirectional=bidirectional, num_buckets=32, max_distance=128
    )
    assert torch.equal(relative_position_bucket(relative, bidirectional, 32, 128), theirs)


# -- forward parity ------------------------------------------------------------------------------------------


@torch.no_grad()
def test_labels_logits_and_loss(pair, gen):
    hf, ours = pair
    ids = torch.randint(2, VOCAB, (3, 9), generator=gen)
    labels = torch.randint(2, VOCAB, (3, 6), generator=gen)
    labels[1, -2:] = -100  # ignored, and replaced by pad in the shifted decoder inputs
    theirs, mine = hf(ids, labels=labels), ours(ids, labels=labels)
    torch.testing.assert_close(mine.logits, theirs.logits, **TOL)
    torch.testing.assert_close(mine.loss, theirs.loss, **TOL)
    torch.testing.assert_close(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state, **TOL)
    assert torch.equal(ours._shift_right(labels), hf._shift_right(labels))


@torch.no_grad()
def test_decoder_input_ids_and_decoder_mask(pair, gen):
    hf, ours = pair
    ids = torch.randint(2, VOCAB, (2, 7), generator=gen)
    dec, dec_mask = padded(gen, (0, 2), 5, "right")
    kwargs = dict(decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    close_on_mask(ours(ids, **kwargs).logits, hf(ids, **kwargs).logits, dec_mask)
    torch.testing.assert_close(
        ours(ids, decoder_input_ids=dec).logits, hf(ids, decoder_input_ids=dec).logits, **TOL
    )


@pytest.mark.parametrize("side", ["left", "right"])
@torch.no_grad()
def test_padded_encoder_inputs(pair, gen, side):
    hf, ours = pair
    ids, mask = padded(gen, (0, 2, 5), 9, side)
    dec = torch.randint(2, VOCAB, (3, 4), generator=gen)
    theirs = hf(ids, attention_mask=mask, decoder_input_ids=dec)
    mine = ours(ids, attention_mask=mask, decoder_input_ids=dec)
    torch.testing.assert_close(mine.logits, theirs.logits, **TOL)  # every decoder position is real
    close_on_mask(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state, mask)


@pytest.mark.parametrize("cache", ["preallocated", "auto", "legacy", "kvcache"])
@torch.no_grad()
def test_incremental_decoding_matches_full_forward(pair, gen, cache):
    """Encoder once, then the decoder one token at a time through our cache == transformers' full forward."""
    hf, ours = pair
    ids, mask = padded(gen, (0, 3), 8, "left")
    dec = torch.cat(
        [torch.zeros(2, 1, dtype=torch.long), torch.randint(2, VOCAB, (2, 5), generator=gen)], dim=1
    )
    full = hf(ids, attention_mask=mask, decoder_input_ids=dec).logits  # [B, 6, V]

    encoded = ours.encode(ids, attention_mask=mask)
    assert isinstance(encoded, BaseModelOutput)
    past = {"preallocated": ours.new_cache(2, dec.shape[1]), "auto": None, "legacy": None,
            "kvcache": KVCache(2, 2, 4, 16, dec.shape[1])}[cache]  # fmt: skip
    for step in range(dec.shape[1]):
        out = ours(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=dec[:, step : step + 1],
                   past_key_values=past, use_cache=True)  # fmt: skip
        torch.testing.assert_close(out.logits[:, 0], full[:, step], **TOL)
        past = out.past_key_values
        assert isinstance(past, EncoderDecoderCache) and past.get_seq_length() == step + 1
        if cache == "legacy":
            past = past.to_legacy_cache()
            assert len(past) == 2 and len(past[0]) == 4 and past[0][2].shape == (2, 4, 8, 16)


@torch.no_grad()
def test_prefill_then_steps_and_cache_only_steps(pair, gen):
    """Decoder tokens at once, then steps without encoder_outputs or input_ids (cross K/V from the cache)."""
    hf, ours = pair
    ids, mask = padded(gen, (2, 0), 7, "right")
    dec = torch.randint(2, VOCAB, (2, 6), generator=gen)
    full = hf(ids, attention_mask=mask, decoder_input_ids=dec).logits
    cache = ours.new_cache(2, 6)
    out = ours(ids, attention_mask=mask, decoder_input_ids=dec[:, :3], past_key_values=cache)
    assert out.past_key_values is cache
    torch.testing.assert_close(out.logits, full[:, :3], **TOL)
    for step in range(3, 6):
        out = ours(attention_mask=mask, decoder_input_ids=dec[:, step : step + 1], past_key_values=cache)
        assert out.encoder_last_hidden_state is None
        torch.testing.assert_close(out.logits[:, 0], full[:, step], **TOL)
    assert cache.self_attention_cache.keys[0].shape == (2, 4, 6, 16)  # preallocated: never grew


@torch.no_grad()
def test_cache_reorder_for_beams(pair, gen):
    hf, ours = pair
    ids = torch.randint(2, VOCAB, (3, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (3, 4), generator=gen)
    index = torch.tensor([2, 0, 0])
    full = hf(ids[index], decoder_input_ids=dec[index]).logits
    encoded = ours.encode(ids)
    cache = ours.new_cache(3, 4)
    ours(encoder_outputs=encoded, decoder_input_ids=dec[:, :3], past_key_values=cache)
    cache.reorder(index)
    out = ours(decoder_input_ids=dec[index, 3:], past_key_values=cache)  # cross K/V come from the cache
    torch.testing.assert_close(out.logits[:, 0], full[:, 3], **TOL)


@torch.no_grad()
def test_hidden_states_and_attentions(pair, gen):
    hf, ours = pair
    ids, mask = padded(gen, (0, 3), 7, "left")
    dec = torch.randint(2, VOCAB, (2, 5), generator=gen)
    kwargs = dict(
        attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True, output_attentions=True
    )
    theirs, mine = hf(ids, **kwargs), ours(ids, **kwargs)
    assert len(mine.encoder_hidden_states) == len(theirs.encoder_hidden_states) == 3
    assert len(mine.decoder_hidden_states) == len(theirs.decoder_hidden_states) == 3
    for a, b in zip(mine.encoder_hidden_states, theirs.encoder_hidden_states):
        close_on_mask(a, b, mask)
    for a, b in zip(mine.decoder_hidden_states, theirs.decoder_hidden_states):
        torch.testing.assert_close(a, b, **TOL)
    for name, shape in (("encoder_attentions", (2, 4, 7, 7)), ("decoder_attentions", (2, 4, 5, 5)),
                        ("cross_attentions", (2, 4, 5, 7))):  # fmt: skip
        mine_t, theirs_t = getattr(mine, name), getattr(theirs, name)
        assert len(mine_t) == len(theirs_t) == 2
        for a, b in zip(mine_t, theirs_t):
            assert a.shape == b.shape == shape
            rows = mask if name == "encoder_attentions" else torch.ones(2, shape[2], dtype=torch.long)
            close_on_mask(a.transpose(1, 2), b.transpose(1, 2), rows)


@torch.no_grad()
def test_head_masks(pair, gen):
    hf, ours = pair
    ids = torch.randint(2, VOCAB, (2, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (2, 4), generator=gen)
    kwargs = dict(
        decoder_input_ids=dec,
        head_mask=torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0]]),
        decoder_head_mask=torch.tensor([1.0, 1, 0, 1]),
        cross_attn_head_mask=torch.tensor([0.0, 1, 1, 1]),
    )
    torch.testing.assert_close(ours(ids, **kwargs).logits, hf(ids, **kwargs).logits, **TOL)


@torch.no_grad()
def test_encoder_outputs_as_tuple_and_return_tuple(pair, gen):
    hf, ours = pair
    ids = torch.randint(2, VOCAB, (2, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (2, 3), generator=gen)
    encoded = (ours.get_encoder()(ids).last_hidden_state,)
    expected = hf(ids, decoder_input_ids=dec)
    out = ours(encoder_outputs=encoded, decoder_input_ids=dec)
    torch.testing.assert_close(out.logits, expected.logits, **TOL)
    mine_t = ours(ids, decoder_input_ids=dec, use_cache=False, return_dict=False)
    theirs_t = hf(ids, decoder_input_ids=dec, use_cache=False, return_dict=False)
    assert len(mine_t) == len(theirs_t) == 2  # (logits, encoder_last_hidden_state)
    for a, b in zip(mine_t, theirs_t):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["base", "encoder"])
@torch.no_grad()
def test_t5model_and_encoder_model(gen, kind):
    classes = {
        "base": (transformers.T5Model, T5Model),
        "encoder": (transformers.T5EncoderModel, T5EncoderModel),
    }
    hf, ours = make_pair("gated-gelu", *classes[kind])
    assert list(ours.state_dict()) == list(hf.state_dict())
    ids, mask = padded(gen, (0, 2), 6, "left")
    kwargs = dict(attention_mask=mask)
    if kind == "base":
        kwargs["decoder_input_ids"] = torch.randint(2, VOCAB, (2, 3), generator=gen)
        mine, theirs = ours(ids, **kwargs), hf(ids, **kwargs)
        torch.testing.assert_close(mine.last_hidden_state, theirs.last_hidden_state, **TOL)
        close_on_mask(mine.encoder_last_hidden_state, theirs.encoder_last_hidden_state, mask)
    else:
        close_on_mask(ours(ids, **kwargs).last_hidden_state, hf(ids, **kwargs).last_hidden_state, mask)


@torch.no_grad()
def test_more_decoder_layers(gen):
    hf, ours = make_pair("relu", num_decoder_layers=3)
    assert ours.num_layers == 3 and len(ours.encoder.block) == 2
    ids = torch.randint(2, VOCAB, (2, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (2, 4), generator=gen)
    torch.testing.assert_close(
        ours(ids, decoder_input_ids=dec).logits, hf(ids, decoder_input_ids=dec).logits, **TOL
    )


def test_engine_contract(pair):
    _, ours = pair
    assert (ours.num_layers, ours.num_kv_heads, ours.head_dim) == (2, 4, 16)
    cache = ours.new_cache(batch_size=3, max_length=11)
    assert isinstance(cache, EncoderDecoderCache) and len(cache) == 2 and cache.get_seq_length() == 0
    assert cache.self_attention_cache.keys[0].shape == (3, 4, 11, 16) and cache.cross_keys == [None, None]
    assert ours.get_encoder() is ours.encoder


# -- checkpoints and auto classes ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@torch.no_grad()
def test_transformers_checkpoint_loads(tmp_path, gen, fmt, variant):
    hf, _ = make_pair(variant)
    hf.save_pretrained(tmp_path, safe_serialization=fmt == "safetensors")
    ours, info = T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert ours.decoder.embed_tokens.weight is ours.shared.weight
    ids = torch.randint(2, VOCAB, (2, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (2, 3), generator=gen)
    torch.testing.assert_close(
        ours(ids, decoder_input_ids=dec).logits, hf(ids, decoder_input_ids=dec).logits, **TOL
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@torch.no_grad()
def test_our_checkpoint_loads_in_transformers(tmp_path, gen, variant):
    hf0, ours = make_pair(variant)
    ours.save_pretrained(tmp_path)
    hf, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    ids = torch.randint(2, VOCAB, (2, 6), generator=gen)
    dec = torch.randint(2, VOCAB, (2, 3), generator=gen)
    torch.testing.assert_close(
        hf(ids, decoder_input_ids=dec).logits, hf0(ids, decoder_input_ids=dec).logits, **TOL
    )


@torch.no_grad()
def test_auto_classes(tmp_path, gen):
    hf, _ = make_pair("relu")
    hf.save_pretrained(tmp_path)
    lm = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert type(lm) is T5ForConditionalGeneration
    assert type(AutoModel.from_pretrained(tmp_path)) is T5Model
    assert type(AutoModelForSeq2SeqLM.from_config(T5Config(**KWARGS))) is T5ForConditionalGeneration
    encoder, info = T5EncoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == []
    ids = torch.randint(2, VOCAB, (2, 5), generator=gen)
    torch.testing.assert_close(encoder(ids).last_hidden_state, hf.encoder(ids).last_hidden_state, **TOL)


def test_random_init_statistics():
    """Mesh TensorFlow init: q has std (d_model * d_kv)^-0.5, embeddings std 1, norms 1."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=2000, d_model=256, d_kv=64, d_ff=512, num_heads=4, num_layers=1)
    model = T5ForConditionalGeneration(cfg)
    q = model.encoder.block[0].layer[0].SelfAttention.q.weight
    assert abs(q.std().item() - (256 * 64) ** -0.5) < 1e-3
    assert abs(model.shared.weight.std().item() - 1.0) < 0.02
    assert torch.all(model.decoder.final_layer_norm.weight == 1.0)


@torch.no_grad()
def test_sdpa_opt_in(gen):
    """attn_implementation="sdpa": the bias is SDPA's float mask (blockwise softmax: not bit-exact)."""
    hf, ours = make_pair("relu")
    ours.config._attn_implementation = "sdpa"
    ids, mask = padded(gen, (0, 3), 7, "left")
    dec = torch.randint(2, VOCAB, (2, 4), generator=gen)
    mine = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(
        mine, hf(ids, attention_mask=mask, decoder_input_ids=dec).logits, atol=1e-4, rtol=1e-4
    )


@torch.no_grad()
def test_greedy_loop_on_the_engine_contract_matches_generate(pair, gen):
    """encode once, new_cache, then one greedy token per step == transformers' generate()."""
    hf, ours = pair
    ids, mask = padded(gen, (0, 2), 7, "left")
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)  # [B, 1 + new]
    encoded = ours.encode(ids, attention_mask=mask)
    cache = ours.new_cache(batch_size=2, max_length=expected.shape[1])
    tokens = torch.zeros(2, 1, dtype=torch.long)  # decoder_start_token_id
    for _ in range(expected.shape[1] - 1):
        out = ours(
            encoder_outputs=encoded,
            attention_mask=mask,
            decoder_input_ids=tokens[:, -1:],
            past_key_values=cache,
        )
        tokens = torch.cat([tokens, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    done = (expected == 1).cumsum(1) - (
        expected == 1
    ).long() > 0  # positions after a row's EOS (HF pads them)
    assert torch.equal(tokens[~done], expected[~done])


@torch.no_grad()
def test_bfloat16_logits(gen):
    hf, ours = make_pair("gated-gelu")
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    ids, mask = padded(gen, (0, 2), 6, "right")
    dec = torch.randint(2, VOCAB, (2, 4), generator=gen)
    mine = ours(ids, attention_mask=mask, decoder_input_ids=dec).logits
    theirs = hf(ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert mine.dtype == theirs.dtype == torch.bfloat16
    torch.testing.assert_close(mine, theirs, atol=1e-3, rtol=1.6e-2)


def test_old_checkpoint_key_is_ignored():
    """Old checkpoints carry a relative bias on the first cross-attention that T5 never uses."""
    hf, _ = make_pair("relu")
    state = dict(hf.state_dict())
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(32, 4)
    ours, info = T5ForConditionalGeneration.from_pretrained(
        None, config=T5Config(**KWARGS), state_dict=state, output_loading_info=True
    )
    assert info["unexpected_keys"] == [] and info["missing_keys"] == []
