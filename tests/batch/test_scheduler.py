"""Scheduler policy on a bare cache: admission bounds, chunked prefill next to decodes, preemption."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from pyengine.batch.paged_cache import PagedKVCache  # noqa: E402
from pyengine.batch.scheduler import Scheduler, Sequence  # noqa: E402


def _scheduler(num_blocks: int = 32, max_batch_size: int = 2, chunk: int = 8, packed: bool = False) -> Scheduler:
    cache = PagedKVCache(1, 1, 2, num_blocks=num_blocks, block_size=4, enable_prefix_sharing=False)
    return Scheduler(cache, max_batch_size, chunk, packed=packed)


def _run(sched: Scheduler, batch) -> None:
    """Pretend the forwards ran: commit what was fed, and append a token to rows that got logits."""
    for seq, n in batch.prefill:
        seq.num_computed += n
        sched.cache.commit(seq.seq_id, seq.tokens, seq.num_computed)
        if seq.pending == 0:
            seq.tokens.append(0)
    for seq in batch.decode:
        seq.num_computed += 1
        sched.cache.commit(seq.seq_id, seq.tokens, seq.num_computed)
        seq.tokens.append(0)


def test_admission_is_bounded_by_max_batch_size_and_fan_out():
    sched = _scheduler(max_batch_size=3)
    seqs = [Sequence(i, [5] * 3, fan_out=2 if i == 1 else 1) for i in range(3)]
    for s in seqs:
        sched.add(s)
    sched.schedule()
    assert sched.running == seqs[:2] and list(sched.waiting) == seqs[2:]  # rows: 1 + 2 = 3


def test_long_prompt_is_chunked_while_others_decode():
    sched = _scheduler(chunk=8)
    short, long = Sequence(0, [5] * 2), Sequence(1, [6] * 30)
    sched.add(short)
    sched.add(long)
    batch = sched.schedule()
    assert batch.prefill == [(short, 2)] and batch.decode == []  # 2 rows x 8 would pass the 8-token budget
    _run(sched, batch)
    chunks = []
    for _ in range(4):
        batch = sched.schedule()
        assert batch.decode == [short]  # the short request decodes every step while the long one prefills
        chunks.append((long.num_computed, batch.prefill))
        _run(sched, batch)
    assert chunks == [(0, [(long, 8)]), (8, [(long, 8)]), (16, [(long, 8)]), (24, [(long, 6)])]
    assert sched.schedule().decode == [short, long]


def test_prefill_pass_packs_prompts_within_the_token_budget():
    sched = _scheduler(max_batch_size=4, chunk=16)
    seqs = [Sequence(i, [5] * n) for i, n in enumerate((3, 5, 4, 9))]
    for s in seqs:
        sched.add(s)
    batch = sched.schedule()
    assert batch.prefill == [(seqs[0], 3), (seqs[1], 5), (seqs[2], 4)]  # a 4th row of 9 -> 4 x 9 > 16
    _run(sched, batch)
    assert sched.schedule().prefill == [(seqs[3], 9)]


def test_packed_prefill_pass_counts_tokens_and_cuts_the_last_chunk_to_the_budget():
    sched = _scheduler(max_batch_size=4, chunk=16, packed=True)
    seqs = [Sequence(i, [5] * n) for i, n in enumerate((3, 5, 4, 9))]
    for s in seqs:
        sched.add(s)
    batch = sched.schedule()
    # 3 + 5 + 4 = 12 tokens; the 4th prompt gets the 4 left of the budget (no padding to count)
    assert batch.prefill == [(seqs[0], 3), (seqs[1], 5), (seqs[2], 4), (seqs[3], 4)]
    _run(sched, batch)
    batch = sched.schedule()
    assert batch.prefill == [(seqs[3], 5)] and batch.decode == seqs[:3]


def test_finished_sequence_frees_its_row_and_blocks_for_the_next():
    sched = _scheduler(max_batch_size=1)
    a, b = Sequence(0, [5] * 5), Sequence(1, [6] * 5)
    sched.add(a)
    sched.add(b)
    _run(sched, sched.schedule())
    assert sched.running == [a] and sched.cache.num_used_blocks == 2
    sched.finish(a)
    assert sched.cache.num_used_blocks == 0
    assert sched.schedule().prefill == [(b, 5)]


def test_out_of_blocks_preempts_the_youngest_and_requeues_it_first():
    sched = _scheduler(num_blocks=4, max_batch_size=2)
    old, young = Sequence(0, [5] * 7), Sequence(1, [6] * 4)  # 2 blocks + 1 block; the watermark holds 1
    sched.add(old)
    sched.add(young)
    for _ in range(2):
        _run(sched, sched.schedule())
    assert sched.running == [old, young]
    while sched.num_preemptions == 0:  # grow until the 4 blocks run out
        _run(sched, sched.schedule())
    assert sched.running == [old] and list(sched.waiting) == [young]
    assert young.num_computed == 0 and young.preemptions == 1 and len(young.tokens) > 4  # keeps its tokens
