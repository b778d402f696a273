"""BatchGenerator against generate(): a request's tokens do not depend on how it was batched.

Many requests of different lengths go through a small `max_batch_size` (continuous admission), a small
block pool (block reuse and preemption), chunked prefill and prefix sharing; every request's greedy tokens
must equal `model.generate(prompt[None], max_new_tokens=n)` for the same model.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pyengine.batch import BatchGenerator, Request  # noqa: E402
from tests.batch.conftest import EOS, random_prompts  # noqa: E402


def _reference(model, prompt: list[int], **kwargs) -> list[int]:
    out = model.generate(torch.tensor([prompt]), pad_token_id=0, **kwargs)
    new = out[0, len(prompt) :].tolist()
    stops = kwargs.get("eos_token_id", EOS) is not None
    return new[: new.index(EOS) + 1] if stops and EOS in new else new


def test_greedy_equals_generate_under_admission_preemption_and_chunking(tiny_model):
    prompts = random_prompts(16, 1, 60, seed=1)
    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=24, block_size=8, prefill_chunk=16)
    results = gen.run([Request(p, max_new_tokens=24, ignore_eos=True) for p in prompts])
    assert gen.stats.preemptions > 0, "the pool was meant to be too small for 4 rows: preemption untested"
    assert gen.stats.kv_peak_blocks <= 24
    for prompt, result in zip(prompts, results):
        assert result.token_ids == _reference(tiny_model, prompt, max_new_tokens=24, eos_token_id=None)
        assert result.finish_reason == "length"
    assert gen.cache.num_used_blocks == 0  # every block came back


def test_decode_steps_run_one_fused_call_over_the_blocks(tiny_model, monkeypatch):
    """Decode passes hand the pools and block tables to decode_layers (no per-layer attend), same tokens."""
    from pyengine.backends.torch import cpp

    calls = {"paged": 0, "dense": 0}
    fused = cpp.decode_layers

    def spy(*args, **kwargs):
        calls["paged" if kwargs.get("paged") is not None else "dense"] += 1
        return fused(*args, **kwargs)

    monkeypatch.setattr(cpp, "decode_layers", spy)
    prompts = random_prompts(6, 1, 30, seed=3)
    gen = BatchGenerator(tiny_model, max_batch_size=3, num_blocks=64, block_size=4, prefill_chunk=16)
    results = gen.run([Request(p, max_new_tokens=10, ignore_eos=True) for p in prompts])
    assert calls["paged"] > 0 and calls["dense"] == 0
    monkeypatch.setattr(cpp, "decode_layers", fused)
    for prompt, result in zip(prompts, results):
        assert result.token_ids == _reference(tiny_model, prompt, max_new_tokens=10, eos_token_id=None)


def test_decode_passes_ask_for_the_top_logits_their_requests_need(tiny_model, monkeypatch):
    """Greedy and top-k requests screen the LM head at the widest width any of them needs (same tokens); a
    pass holding a request with a repetition penalty computes every logit."""
    from pyengine.backends.torch import cpp

    widths = []
    real = cpp.top_logits
    monkeypatch.setattr(cpp, "top_logits", lambda out, x, s, w, k: widths.append(k) or real(out, x, s, w, k))
    prompts = random_prompts(6, 2, 20, seed=8)
    params = [dict(do_sample=True, top_k=6, seed=4), {}, dict(min_new_tokens=4)]
    for penalty in (False, True):
        extra = [dict(repetition_penalty=1.3)] if penalty else []
        requests = [Request(p, max_new_tokens=8, **params[i % 3]) for i, p in enumerate(prompts)]
        requests += [Request(prompts[0], max_new_tokens=8, **e) for e in extra]
        runs = []
        for screens in (True, False):
            widths.clear()
            gen = BatchGenerator(tiny_model, max_batch_size=7, num_blocks=96, block_size=4)
            gen.screens_head = screens
            runs.append([r.token_ids for r in gen.run(requests)])
            if screens:
                seen = set(widths)
        assert runs[0] == runs[1]
        if penalty:  # the penalized request runs in every decode pass (all seven fit in one batch)
            assert seen == set()
        else:  # the sampled requests need 6 while they run; min-new-tokens 1 + one per EOS id; plain greedy 1
            assert 6 in seen and seen <= {1, 2, 6}


def test_packed_and_padded_prefill_give_generate_s_tokens(tiny_model):
    """Prompts of 1-40 tokens, packed into one row per prefill pass (cut at the budget) or left-padded."""
    prompts = random_prompts(10, 1, 40, seed=11)
    for packed in (True, False):
        gen = BatchGenerator(tiny_model, max_batch_size=6, num_blocks=96, block_size=4, prefill_chunk=48,
                             packed_prefill=packed)  # fmt: skip
        results = gen.run([Request(p, max_new_tokens=6, ignore_eos=True) for p in prompts])
        for prompt, result in zip(prompts, results):
            assert result.token_ids == _reference(tiny_model, prompt, max_new_tokens=6, eos_token_id=None), packed


def test_greedy_with_eos_and_processors_equals_generate(tiny_model):
    prompts = random_prompts(8, 2, 30, seed=2)
    params = [dict(repetition_penalty=1.3), dict(no_repeat_ngram_size=2), dict(min_new_tokens=5), {}]
    requests = [Request(p, max_new_tokens=16, **params[i % 4]) for i, p in enumerate(prompts)]
    results = BatchGenerator(tiny_model, max_batch_size=3, num_blocks=64, block_size=4).run(requests)
    for i, (prompt, result) in enumerate(zip(prompts, results)):
        assert result.token_ids == _reference(tiny_model, prompt, max_new_tokens=16, **params[i % 4]), params[
            i % 4
        ]


def test_shared_prefixes_are_computed_once_and_change_nothing(tiny_model):
    stem = random_prompts(1, 40, 40, seed=3)[0]
    prompts = [stem + tail for tail in random_prompts(6, 1, 12, seed=4)]
    gen = BatchGenerator(tiny_model, max_batch_size=2, num_blocks=64, block_size=8)
    results = gen.run([Request(p, max_new_tokens=8, ignore_eos=True) for p in prompts])
    # The first two are admitted together (nothing registered yet); the next four reuse 5 full blocks each.
    assert gen.stats.prefix_hit_tokens == 4 * 40
    for prompt, result in zip(prompts, results):
        assert result.token_ids == _reference(tiny_model, prompt, max_new_tokens=8, eos_token_id=None)


def test_sampling_matches_generate_under_the_same_seed_whatever_the_batch(tiny_model):
    prompts = random_prompts(5, 3, 20, seed=5)
    kwargs = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=12)
    requests = [Request(p, seed=100 + i, ignore_eos=True, **kwargs) for i, p in enumerate(prompts)]
    batched = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=64, block_size=4).run(requests)
    alone = BatchGenerator(tiny_model, max_batch_size=1, num_blocks=64, block_size=4).run(requests[2:3])
    assert alone[0].token_ids == batched[2].token_ids
    for i, (prompt, result) in enumerate(zip(prompts, batched)):
        torch.manual_seed(100 + i)
        assert result.token_ids == _reference(tiny_model, prompt, eos_token_id=None, **kwargs)


def test_stop_strings_cut_the_text_and_free_the_row(tiny_model, byte_tokenizer):
    gen = BatchGenerator(tiny_model, byte_tokenizer, max_batch_size=2, num_blocks=64, block_size=4)
    free = gen.run([Request("hello", max_new_tokens=12, ignore_eos=True)])[0]
    stop = free.text[3:5]  # a string the model is known to produce
    result = gen.run([Request("hello", max_new_tokens=12, ignore_eos=True, stop=[stop])])[0]
    assert result.finish_reason == "stop"
    assert result.text == free.text[: free.text.find(stop)]
    assert free.token_ids[: len(result.token_ids)] == result.token_ids


def test_results_stream_as_requests_finish(tiny_model):
    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=64, block_size=4)
    requests = [Request([5, 6, 7], id=name, max_new_tokens=n, ignore_eos=True) for name, n in
                (("long", 12), ("short", 2), ("mid", 6), ("none", 0))]  # fmt: skip
    seen = []
    stream = gen.generate(requests, on_step=lambda stats: seen.append(stats.new_tokens))
    assert [r.id for r in stream] == ["none", "short", "mid", "long"]
    assert seen[-1] == 20 and gen.stats.summary()["requests"] == 4
    stream = gen.generate(requests)
    next(stream)
    stream.close()  # the caller stops early: nothing may keep holding blocks or rows
    assert gen.cache.num_used_blocks == 0 and not gen.scheduler.has_work


def test_num_return_sequences_fork_the_prompt_blocks(tiny_model):
    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=64, block_size=4)
    prompt = random_prompts(1, 10, 10, seed=6)[0]
    req = Request(prompt, do_sample=True, seed=7, num_return_sequences=3, max_new_tokens=8, ignore_eos=True)
    result = gen.run([req])[0]
    assert len(result.completions) == 3 and all(len(c.token_ids) == 8 for c in result.completions)
    single = gen.run([Request(prompt, do_sample=True, seed=7, max_new_tokens=8, ignore_eos=True)])[0]
    assert result.completions[0].token_ids == single.token_ids  # sample 0 draws with the request's seed
    assert gen.stats.prefix_hit_tokens == 8  # the repeated prompt's two full blocks were cached
    assert gen.cache.num_used_blocks == 0


def test_bad_requests_fail_before_any_forward(tiny_model):
    gen = BatchGenerator(tiny_model, max_batch_size=2, num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="raise kv_cache_bytes"):
        gen.run([Request([5] * 10, max_new_tokens=8)])
    with pytest.raises(ValueError, match="tokenizer"):
        gen.run([Request("text prompt")])
    with pytest.raises(ValueError, match="top_p"):
        gen.run([Request([5], do_sample=True, top_p=2.0)])
