"""Encoder-decoder generate() on tiny random T5 checkpoints written by transformers 4.57, token for token."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import AutoModelForSeq2SeqLM  # noqa: E402

VOCAB = 300


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                                feed_forward_proj=request.param, decoder_start_token_id=0, pad_token_id=0,
                                eos_token_id=1, tie_word_embeddings=request.param == "relu")
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("t5")
    hf.save_pretrained(path)
    return hf, AutoModelForSeq2SeqLM.from_pretrained(path)


def _batch():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 0, 0  # right padding (encoder side)
    return ids, mask


def _both(pair, seed=None, **kwargs):
    outs = []
    for model in pair:
        if seed is not None:
            torch.manual_seed(seed)
        outs.append(model.generate(**kwargs))
    return outs


CASES = [
    {},
    {"num_beams": 3, "num_return_sequences": 2},
    {"num_beams": 2, "length_penalty": 0.6, "no_repeat_ngram_size": 2},
    {"repetition_penalty": 1.4, "min_new_tokens": 4},
    {"encoder_no_repeat_ngram_size": 2},
    {"forced_bos_token_id": 7, "forced_eos_token_id": 1},
    {"bad_words_ids": [[5], [8, 9]]},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c) or "greedy")
def test_t5_generate_matches(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=8, **case)
    assert torch.equal(a, b), f"\nhf:   {a.tolist()}\nours: {b.tolist()}"


@pytest.mark.parametrize("case", [{"top_k": 20}, {"num_return_sequences": 2, "top_p": 0.9}, {"num_beams": 2}])
def test_t5_sampling_same_seed(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, seed=3, input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=8, **case)
    assert torch.equal(a, b)


def test_t5_dict_output_and_scores(pair):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=5, num_beams=2, return_dict_in_generate=True,
                 output_scores=True, output_attentions=True, output_hidden_states=True)
    assert type(b).__name__ == "GenerateBeamEncoderDecoderOutput"
    assert torch.equal(a.sequences, b.sequences)
    torch.testing.assert_close(b.sequences_scores, a.sequences_scores, atol=1e-5, rtol=1e-5)
    for sa, sb in zip(a.scores, b.scores):
        torch.testing.assert_close(sb, sa, atol=1e-5, rtol=1e-5)
    assert len(b.encoder_hidden_states) == len(a.encoder_hidden_states)
    assert len(b.cross_attentions) == len(a.cross_attentions)


def test_t5_encoder_outputs_and_decoder_input_ids(pair):
    hf, ours = pair
    ids, mask = _batch()
    enc = ours.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
    start = torch.tensor([[0, 17], [0, 17], [0, 17]])
    a = hf.generate(input_ids=ids, attention_mask=mask, decoder_input_ids=start, max_new_tokens=5)
    b = ours.generate(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=start, max_new_tokens=5)
    assert torch.equal(a, b)


def test_t5_without_decoder_start_fails_clearly(pair):
    _, ours = pair
    ids, _ = _batch()
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours.generate(input_ids=ids, decoder_start_token_id=None, bos_token_id=None, max_new_tokens=2)
