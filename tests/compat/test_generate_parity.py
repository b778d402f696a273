"""generate() token for token against transformers 4.57 on tiny random checkpoints written by transformers.

Greedy with every processor of the foundation issue, batched with left padding; sampling with the same
torch seed (our torch backend draws with `torch.multinomial` after the same processors, so the tokens
match transformers'); scores equal within the fp32 tolerance.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import AutoModelForCausalLM  # noqa: E402

VOCAB = 1000


def _hf_gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=128,
                                  bos_token_id=1, eos_token_id=2)
    return transformers.GPT2LMHeadModel(cfg)


def _hf_llama():
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    hf = {"gpt2": _hf_gpt2, "llama": _hf_llama}[request.param]().eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours = AutoModelForCausalLM.from_pretrained(path)
    return hf, ours


def _batch(pad: int = 0):
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 7))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = pad, 0  # left padding
    ids[2, :4], mask[2, :4] = pad, 0
    return ids, mask


def _both(pair, seed=None, **kwargs):
    hf, ours = pair
    outs = []
    for model in (hf, ours):
        if seed is not None:
            torch.manual_seed(seed)
        outs.append(model.generate(**kwargs))
    return outs


GREEDY_CASES = [
    {},
    {"repetition_penalty": 1.5},
    {"repetition_penalty": 0.7},
    {"no_repeat_ngram_size": 2},
    {"bad_words_ids": [[5], [7, 8], [11, 12, 13]]},
    {"min_length": 15},
    {"min_new_tokens": 6},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "min_length": 12},
]


@pytest.mark.parametrize("case", GREEDY_CASES, ids=lambda c: "-".join(c) or "plain")
def test_greedy_left_padded_batch(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0, **case)
    assert torch.equal(a, b), f"\nhf:   {a.tolist()}\nours: {b.tolist()}"


def test_greedy_eos_per_row(pair):
    """Pick an EOS id that the model emits mid-way in one row only, then check padding after it."""
    ids, mask = _batch()
    hf, _ = pair
    probe = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=None)
    eos = int(probe[0, ids.shape[1] + 3])
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=eos)
    assert torch.equal(a, b)
    assert (a == eos).any()


def test_bad_words_blocks_greedy_choice(pair):
    ids, mask = _batch()
    hf, _ = pair
    probe = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, pad_token_id=0)
    banned = [[int(t)] for t in probe[:, ids.shape[1]:].reshape(-1).unique()[:3]]
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0, bad_words_ids=banned)
    assert torch.equal(a, b)
    for (t,) in banned:
        assert not (b[:, ids.shape[1]:] == t).any()


SAMPLE_CASES = [
    {"top_k": 0},
    {},
    {"temperature": 0.7, "top_k": 20},
    {"top_p": 0.8, "top_k": 0},
    {"temperature": 1.3, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.2},
    {"min_p": 0.05, "top_k": 0},
    {"num_return_sequences": 3, "top_p": 0.95},
]


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=lambda c: "-".join(c) or "defaults")
def test_sampling_same_torch_seed(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, seed=123, input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=10,
                 pad_token_id=0, **case)
    assert torch.equal(a, b), f"\nhf:   {a.tolist()}\nours: {b.tolist()}"


def test_scores_and_logits_match(pair):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0, repetition_penalty=1.2,
                 return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert torch.equal(a.sequences, b.sequences)
    assert len(a.scores) == len(b.scores) == 4
    for sa, sb in zip(a.scores + a.logits, b.scores + b.logits):
        torch.testing.assert_close(sb, sa, atol=1e-5, rtol=1.3e-6)


def test_default_max_length_and_no_prompt(pair):
    hf, ours = pair
    a, b = _both(pair, input_ids=torch.tensor([[5, 6, 7]]))
    assert torch.equal(a, b) and b.shape[1] <= 23
    a, b = _both(pair, max_new_tokens=5)  # no prompt: starts from BOS
    assert torch.equal(a, b) and b[0, 0].item() == 1


def test_use_cache_false_matches(pair):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"top_p": 1.5, "do_sample": True}, ValueError, "top_p"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens"),
        ({"input_ids": torch.tensor([[1, VOCAB + 3]])}, ValueError, "outside the model's vocabulary"),
        ({"input_ids": torch.tensor([[1, -4]])}, ValueError, "outside the model's vocabulary"),
        ({"bad_words_ids": [[VOCAB + 1]]}, ValueError, "outside the vocabulary"),
        ({"num_return_sequences": 2}, ValueError, "num_return_sequences"),
        ({"max_length": 2, "input_ids": torch.tensor([[1, 2, 3]])}, ValueError, "max_length"),
        ({"not_an_arg": 3}, ValueError, "not_an_arg"),
        ({"input_ids": torch.tensor([[1.0, 2.0]])}, TypeError, "integer"),
    ],
)
def test_bad_input_is_rejected_clearly(pair, kwargs, err, match):
    _, ours = pair
    kwargs = {"input_ids": torch.tensor([[5, 6]]), **kwargs}
    with pytest.raises(err, match=match):
        ours.generate(**kwargs)


BEAM_CASES = [
    {"num_beams": 2},
    {"num_beams": 3, "num_return_sequences": 3},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.5, "repetition_penalty": 1.3},
    {"num_beams": 3, "early_stopping": True, "no_repeat_ngram_size": 2},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0},
    {"num_beams": 2, "bad_words_ids": [[5], [7, 8]], "min_new_tokens": 5},
]


@pytest.mark.parametrize("case", BEAM_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:60])
def test_beam_search(pair, case):
    ids, mask = _batch()
    hf, _ = pair
    probe = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=None)
    eos = int(probe[1, ids.shape[1] + 2])  # an EOS the beams actually meet
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=eos,
                 return_dict_in_generate=True, output_scores=True, **case)
    assert torch.equal(a.sequences, b.sequences), f"\nhf:   {a.sequences.tolist()}\nours: {b.sequences.tolist()}"
    torch.testing.assert_close(b.sequences_scores, a.sequences_scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.beam_indices.long(), b.beam_indices.long())
    for sa, sb in zip(a.scores, b.scores):
        torch.testing.assert_close(sb, sa, atol=1e-5, rtol=1.3e-6)


@pytest.mark.parametrize("case", [{"num_beams": 2}, {"num_beams": 3, "num_return_sequences": 2, "top_k": 10, "temperature": 0.8}])
def test_beam_sample_same_torch_seed(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, seed=7, input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=8, pad_token_id=0,
                 **case)
    assert torch.equal(a, b), f"\nhf:   {a.tolist()}\nours: {b.tolist()}"


def test_beam_num_return_sequences_above_num_beams_fails(pair):
    _, ours = pair
    with pytest.raises(ValueError, match="num_return_sequences"):
        ours.generate(torch.tensor([[5, 6]]), num_beams=2, num_return_sequences=3, max_new_tokens=3)


def _allowed(batch_id, sent):
    return list(range(3, 40)) if batch_id % 2 == 0 else list(range(100, 140))


MORE_CASES = [
    {"forced_bos_token_id": 9, "forced_eos_token_id": 11},
    {"remove_invalid_values": True},
    {"encoder_repetition_penalty": 1.5},
    {"encoder_no_repeat_ngram_size": 2},
    {"prefix_allowed_tokens_fn": _allowed},
    {"prefix_allowed_tokens_fn": _allowed, "num_beams": 2},
    {"num_beams": 2, "encoder_no_repeat_ngram_size": 2, "forced_eos_token_id": 11},
]


@pytest.mark.parametrize("case", MORE_CASES, ids=lambda c: "-".join(c)[:60])
def test_more_processors(pair, case):
    ids, mask = _batch()
    a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=7, pad_token_id=0, **case)
    assert torch.equal(a, b), f"\nhf:   {a.tolist()}\nours: {b.tolist()}"


def test_user_processor_and_criterion_classes_run_as_is(pair):
    """Custom subclasses of transformers' base classes are called as transformers calls them."""
    hf, ours = pair

    class BanOdd(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, 1::2] = -float("inf")
            return scores

    class StopAt(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids.shape[-1] >= 12

    ids, mask = _batch()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0)
    a = hf.generate(**kw, logits_processor=transformers.LogitsProcessorList([BanOdd()]),
                    stopping_criteria=transformers.StoppingCriteriaList([StopAt()]))
    b = ours.generate(**kw, logits_processor=[BanOdd()], stopping_criteria=[StopAt()])
    assert torch.equal(a, b) and b.shape[1] == 12 and (b[:, 7:] % 2 == 0).all()


@pytest.mark.parametrize("num_beams", [1, 2])
def test_attentions_and_hidden_states(pair, num_beams):
    """transformers' SDPA path returns no attention weights; compare with its eager path."""
    hf, _ = pair
    ids, mask = _batch()
    previous = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"
    try:
        a, b = _both(pair, input_ids=ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0, num_beams=num_beams,
                     return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    finally:
        hf.config._attn_implementation = previous
    assert torch.equal(a.sequences, b.sequences)
    assert len(a.attentions) == len(b.attentions) == 3
    real = mask.repeat_interleave(num_beams, 0).bool()  # prefill: pad positions hold don't-care values
    for i, (step_a, step_b) in enumerate(zip(a.hidden_states, b.hidden_states)):
        for ha, hb in zip(step_a, step_b):
            if i == 0:
                ha, hb = ha[real], hb[real]
            torch.testing.assert_close(hb, ha, atol=1e-5, rtol=1e-5)
    for step_a, step_b in zip(a.attentions[1:], b.attentions[1:]):  # decode steps: one query row
        for aa, ab in zip(step_a, step_b):
            torch.testing.assert_close(ab, aa, atol=1e-5, rtol=1e-5)


def test_max_time_stops_early(pair):
    _, ours = pair
    out = ours.generate(torch.tensor([[5, 6]]), max_new_tokens=100, max_time=0.0, pad_token_id=0)
    assert out.shape[1] == 3  # one step always runs, then the deadline has passed
    out = ours.generate(torch.tensor([[5, 6]] * 2), max_new_tokens=100, max_time=0.0, num_beams=2, pad_token_id=0)
    assert out.shape[1] == 3


def test_output_classes_behave_like_model_outputs(pair):
    _, ours = pair
    out = ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2, return_dict_in_generate=True, output_scores=True)
    assert out["sequences"] is out.sequences is out[0]
    assert out[1] is out.scores and "attentions" not in out
    assert type(out).__name__ == "GenerateDecoderOnlyOutput"
    with pytest.raises(Exception, match="pop"):
        out.pop("sequences")


def test_model_hooks_are_called(pair):
    """prepare_inputs_for_generation and adjust_logits_during_generation can be overridden per model."""
    _, ours = pair
    seen = []

    def prepare(input_ids, **kwargs):
        seen.append(input_ids.shape[1])
        return type(ours).prepare_inputs_for_generation(ours, input_ids, **kwargs)

    def adjust(logits, **kwargs):
        logits = logits.clone()
        logits[:, 42] = 1e4  # force token 42
        return logits

    ours.prepare_inputs_for_generation, ours.adjust_logits_during_generation = prepare, adjust
    try:
        out = ours.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, pad_token_id=0)
    finally:
        del ours.prepare_inputs_for_generation, ours.adjust_logits_during_generation
    assert out[0, 3:].tolist() == [42, 42, 42]
    assert seen == [3, 1, 1]  # prompt first, then one new token per step through the cache


def test_seed_extension_is_batch_independent(pair):
    """pyengine's `seed=`: counter-based fused sampling; a prompt's tokens depend only on its own seed."""
    _, ours = pair
    a = torch.tensor([[11, 12, 13, 14]])
    b = torch.tensor([[0, 0, 21, 22]])
    kw = dict(do_sample=True, max_new_tokens=8, top_k=40, top_p=0.9, temperature=0.8, pad_token_id=0)
    alone = ours.generate(a, seed=[5], **kw)
    batch = ours.generate(torch.cat([b, a]), attention_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
                          seed=[9, 5], **kw)
    assert torch.equal(alone[0], batch[1])
    assert torch.equal(ours.generate(a, seed=[5], **kw), alone)  # reproducible
    other = ours.generate(a, seed=[6], **kw)
    assert not torch.equal(other, alone)


def test_seed_extension_rejects_what_it_cannot_do(pair):
    _, ours = pair
    ids = torch.tensor([[5, 6]])
    with pytest.raises(ValueError, match="do_sample"):
        ours.generate(ids, seed=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="NoRepeatNGram"):
        ours.generate(ids, seed=1, do_sample=True, no_repeat_ngram_size=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="one per prompt"):
        ours.generate(ids, seed=[1, 2], do_sample=True, max_new_tokens=2)
