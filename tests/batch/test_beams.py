"""Beam search and num_return_sequences in the batch engine against generate().

A beam request decodes its K beams as K rows of the shared batch, next to greedy and sampled requests;
its completions must equal `generate(num_beams=K, num_return_sequences=n)`'s rows (tokens and
sequences_scores), whatever the pool size (a small pool preempts beams waiting for their siblings).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pyengine.batch import BatchGenerator, Request  # noqa: E402
from tests.batch.conftest import EOS, random_prompts  # noqa: E402


def _reference_beams(model, prompt: list[int], **kwargs) -> tuple[list[list[int]], list[float]]:
    out = model.generate(torch.tensor([prompt]), pad_token_id=0, return_dict_in_generate=True, output_scores=True,
                         **kwargs)  # fmt: skip
    rows = []
    for row in out.sequences[:, len(prompt) :].tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows, out.sequences_scores.tolist()


@pytest.mark.parametrize("num_blocks", [256, 18])
def test_beams_equal_generate_next_to_other_requests(tiny_model, num_blocks):
    prompts = random_prompts(5, 3, 24, seed=11)
    beam = dict(num_beams=3, num_return_sequences=2, length_penalty=0.7, max_new_tokens=10)
    requests = [
        Request(prompts[0], **beam),
        Request(prompts[1], max_new_tokens=10),
        Request(prompts[2], num_beams=4, max_new_tokens=12, early_stopping=True),
        Request(prompts[3], do_sample=True, seed=3, num_return_sequences=2, max_new_tokens=6),
        Request(prompts[4], **beam),
    ]
    gen = BatchGenerator(tiny_model, max_batch_size=8, num_blocks=num_blocks, block_size=4, prefill_chunk=32)
    results = gen.run(requests)
    if num_blocks == 18:
        assert gen.stats.preemptions > 0, "the small pool was meant to preempt: recompute of beams untested"
    for i, kwargs in ((0, beam), (4, beam), (2, dict(num_beams=4, max_new_tokens=12, early_stopping=True))):
        rows, scores = _reference_beams(tiny_model, prompts[i], **kwargs)
        assert [c.token_ids for c in results[i].completions] == rows, f"request {i}"
        assert [c.score for c in results[i].completions] == pytest.approx(scores, abs=1e-5)
    greedy = tiny_model.generate(torch.tensor([prompts[1]]), max_new_tokens=10, pad_token_id=0)[0, len(prompts[1]) :]
    greedy = greedy.tolist()
    assert results[1].token_ids == (greedy[: greedy.index(EOS) + 1] if EOS in greedy else greedy)
    assert len(results[3].completions) == 2
    assert gen.cache.num_used_blocks == 0, "every beam's blocks came back"


def test_beams_share_blocks_instead_of_copying(tiny_model):
    """K beams over one long prompt hold about one prompt's blocks, not K copies of it."""
    prompt = random_prompts(1, 64, 64, seed=12)[0]
    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=128, block_size=8, enable_prefix_sharing=False)
    result = gen.run([Request(prompt, num_beams=4, max_new_tokens=8, ignore_eos=True)])[0]
    # 8 prompt blocks shared by all beams + at most 2 own blocks per beam (the tail copy and one new block).
    assert gen.stats.kv_peak_blocks <= 8 + 4 * 2
    rows, _ = _reference_beams(tiny_model, prompt, num_beams=4, max_new_tokens=8, eos_token_id=None)
    assert result.token_ids == rows[0]


def test_beam_sampling_matches_generate_under_the_same_seed(tiny_model):
    prompt = random_prompts(1, 5, 5, seed=13)[0]
    kwargs = dict(do_sample=True, num_beams=2, top_k=30, temperature=0.9, max_new_tokens=8)
    result = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=64, block_size=4).run(
        [Request(prompt, seed=21, **kwargs), Request(prompt[:3], max_new_tokens=5)]
    )[0]
    torch.manual_seed(21)
    rows, _ = _reference_beams(tiny_model, prompt, **kwargs)
    assert result.token_ids == rows[0]


def test_bad_beam_requests_say_what_to_do(tiny_model):
    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=16, block_size=4)
    with pytest.raises(ValueError, match="smaller or equal to num_beams"):
        gen.validate(Request([5, 6], num_beams=2, num_return_sequences=3))
    with pytest.raises(ValueError, match="greedy decoding returns one sequence"):
        gen.validate(Request([5, 6], num_return_sequences=2))
    with pytest.raises(ValueError, match="max_batch_size"):
        gen.validate(Request([5, 6], num_beams=8, max_new_tokens=1))
    with pytest.raises(ValueError, match="raise kv_cache_bytes"):
        gen.validate(Request([5] * 20, num_beams=4, max_new_tokens=20))
    with pytest.raises(ValueError, match="stop strings"):
        gen.validate(Request([5, 6], num_beams=2, stop=["x"]))


def test_beam_threads_exist_only_for_admitted_requests(tiny_model):
    """Each running beam request drives run_beam from a helper thread; queued ones must not hold one."""
    import threading

    gen = BatchGenerator(tiny_model, max_batch_size=4, num_blocks=64, block_size=4)
    requests = [Request(p, num_beams=2, max_new_tokens=4) for p in random_prompts(6, 2, 8, seed=14)]
    live = []
    stream = gen.generate(requests, on_step=lambda _: live.append(
        sum(t.name == "pyengine-beam" for t in threading.enumerate())))  # fmt: skip
    assert len(list(stream)) == 6
    assert 0 < max(live) <= 2, "4 rows hold at most two 2-beam requests"
    assert not any(t.name == "pyengine-beam" for t in threading.enumerate())
