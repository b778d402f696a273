"""PagedKVCache bookkeeping (free list, refcounts, prefix sharing, copy-on-write) and PagedKVView's gather."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pyengine.batch.paged_cache import PagedKVCache, PagedKVView, blocks_for_budget  # noqa: E402

H, D = 2, 4


def _cache(num_blocks: int = 16, block_size: int = 4, sharing: bool = True) -> PagedKVCache:
    return PagedKVCache(1, H, D, num_blocks=num_blocks, block_size=block_size, enable_prefix_sharing=sharing)


def _check_held(cache: PagedKVCache) -> None:
    """The incremental slot count equals a recount over held blocks."""
    held = [b for b in range(cache.num_blocks) if cache.refcount[b] > 0]
    assert cache.held_slots == sum(cache.filled[b] for b in held) and cache.num_used_blocks == len(held)


def _prefill(cache: PagedKVCache, seq_id: int, tokens: list[int]) -> int:
    cached = cache.add_sequence(seq_id, tokens)
    cache.reserve(seq_id, len(tokens) - cached)
    cache.commit(seq_id, tokens, len(tokens))
    return cached


def test_blocks_return_to_the_free_list_at_once():
    cache = _cache(sharing=False)
    _prefill(cache, 0, list(range(10)))  # 3 blocks of 4
    assert cache.num_used_blocks == 3 and cache.seqs[0].table == [0, 1, 2]
    assert cache.utilisation() == pytest.approx(10 / 12)
    cache.free_sequence(0)
    assert cache.num_used_blocks == 0 and cache.num_free_blocks == 16


def test_budget_and_memory_held_close_to_tokens_held():
    per_block = PagedKVCache.bytes_per_block(30, 3, 64, 16, torch.float32)
    assert per_block == 2 * 30 * 16 * 3 * 64 * 4
    assert blocks_for_budget(10 * per_block + 5, 30, 3, 64, 16, torch.float32) == 9  # + the scratch block
    with pytest.raises(ValueError, match="raise it"):
        blocks_for_budget(2 * per_block - 1, 30, 3, 64, 16, torch.float32)
    cache = PagedKVCache(1, H, D, num_blocks=64, block_size=16, enable_prefix_sharing=False)
    for i, n in enumerate((150, 170, 233)):  # at most P - 1 wasted slots per sequence
        _prefill(cache, i, list(range(n)))
    assert cache.utilisation() >= 0.9


def test_prefix_sharing_reuses_full_blocks_but_never_the_last_token():
    cache = _cache()
    prompt = list(range(100, 110))  # blocks [100..103] [104..107] + tail
    assert _prefill(cache, 0, prompt) == 0
    assert _prefill(cache, 1, prompt) == 8  # two full blocks shared; the tail is recomputed
    assert cache.seqs[1].table[:2] == cache.seqs[0].table[:2]
    assert cache.seqs[1].table[2] != cache.seqs[0].table[2]
    assert [cache.refcount[b] for b in cache.seqs[0].table] == [2, 2, 1]
    assert _prefill(cache, 2, prompt[:8]) == 4  # 8 tokens: the block holding the last one is not shared
    assert _prefill(cache, 3, [7] + prompt[1:]) == 0  # differs in block 0: nothing shared (chained hash)
    _check_held(cache)
    for i in range(4):
        cache.free_sequence(i)
        _check_held(cache)


def test_freed_registered_blocks_are_revived_or_evicted():
    cache = _cache(num_blocks=4)
    prompt = list(range(9))
    _prefill(cache, 0, prompt)
    cache.free_sequence(0)
    assert cache.num_free_blocks == 4 and len(cache.cached_free) == 2
    assert _prefill(cache, 1, prompt) == 8  # revived from the cached-free LRU
    cache.free_sequence(1)
    _prefill(cache, 2, list(range(50, 66)))  # needs all 4 blocks: registered ones get evicted
    assert not cache.cached_free and cache.num_free_blocks == 0
    cache.free_sequence(2)
    assert _prefill(cache, 3, prompt) == 0  # its blocks were evicted: computed again
    _check_held(cache)


def test_fork_copies_a_shared_tail_block_on_first_write():
    cache = _cache()
    _prefill(cache, 0, list(range(6)))  # blocks: full + tail with 2 tokens
    pool = cache.keys[0]
    pool[cache.seqs[0].table[1]] = 1.0
    cache.fork(0, 1)
    assert cache.refcount[cache.seqs[0].table[1]] == 2
    cache.reserve(1, 1)  # child writes position 6: its tail block must become its own copy
    child_tail, parent_tail = cache.seqs[1].table[1], cache.seqs[0].table[1]
    assert child_tail != parent_tail and cache.seqs[1].table[0] == cache.seqs[0].table[0]
    assert torch.equal(pool[child_tail], pool[parent_tail])
    assert cache.refcount[parent_tail] == 1 and cache.refcount[cache.seqs[0].table[0]] == 2
    cache.reserve(0, 1)  # the parent now owns its tail alone: no copy
    assert cache.seqs[0].table[1] == parent_tail
    cache.commit(1, list(range(7)), 7)
    _check_held(cache)
    cache.free_sequence(0)
    _check_held(cache)


def test_reserve_raises_when_the_pool_is_exhausted():
    cache = _cache(num_blocks=2)
    _prefill(cache, 0, [1] * 8)
    assert not cache.can_append(0, 1)
    with pytest.raises(MemoryError):
        cache.reserve(0, 1)


def test_view_writes_blocks_and_gathers_right_aligned_rows():
    """Decode step over rows of different lengths: each row's keys equal its dense history, right-aligned."""
    cache = _cache(num_blocks=32, block_size=4, sharing=False)
    g = torch.Generator().manual_seed(0)
    lengths = [3, 9, 1]
    dense = {}
    for i, n in enumerate(lengths):  # prefill each row through a one-row view, as the engine does
        cache.add_sequence(i, list(range(n)))
        cache.reserve(i, n)
        k = torch.randn(1, H, n, D, generator=g)
        view = PagedKVView(cache, [i], n)
        keys, _ = view.update(0, k, k + 1)
        assert torch.equal(keys, k)  # first chunk: returned as-is
        cache.commit(i, list(range(n)), n)
        dense[i] = k[0]
    for i in range(3):
        cache.reserve(i, 1)
    new = torch.randn(3, H, 1, D, generator=g)
    view = PagedKVView(cache, [0, 1, 2], 1)
    keys, values = view.update(0, new, new + 1)
    longest = max(lengths)
    assert keys.shape == (3, H, longest + 1, D) and view.get_seq_length() == longest
    for i, n in enumerate(lengths):
        expect = torch.cat([dense[i], new[i]], dim=1)  # [H, n + 1, D]
        assert torch.equal(keys[i, :, longest - n :], expect)
        assert torch.equal(values[i, :, longest - n :], expect + 1)
        assert view.attention_mask[i].tolist() == [0] * (longest - n) + [1] * (n + 1)
        assert view.position_ids[i].tolist() == [n]


def test_view_prefill_chunk_after_cached_prefix_gathers_the_prefix():
    cache = _cache(num_blocks=8, block_size=4)
    k = torch.randn(1, H, 7, D)
    cache.add_sequence(0, list(range(7)))
    cache.reserve(0, 7)
    PagedKVView(cache, [0], 5).update(0, k[:, :, :5], k[:, :, :5])  # chunk 1
    cache.commit(0, list(range(7)), 5)
    view = PagedKVView(cache, [0], 2)  # chunk 2: past 5
    keys, _ = view.update(0, k[:, :, 5:], k[:, :, 5:])
    assert torch.equal(keys, k) and view.get_seq_length() == 5
    assert view.position_ids.tolist() == [[5, 6]] and view.attention_mask.tolist() == [[1] * 7]


def test_view_packs_left_padded_prefill_rows_with_different_pasts():
    """Row 0: 3 cached + 2 new; row 1: 0 cached + 4 new. Pads write to scratch and are masked out."""
    cache = _cache(num_blocks=8, block_size=4, sharing=False)
    k0 = torch.randn(1, H, 3, D)
    cache.add_sequence(0, list(range(5)))
    cache.reserve(0, 5)
    PagedKVView(cache, [0], 3).update(0, k0, k0)
    cache.commit(0, list(range(5)), 3)
    cache.add_sequence(1, list(range(4)))
    cache.reserve(1, 4)
    new = torch.randn(2, H, 4, D)  # row 0's first two columns are padding
    view = PagedKVView(cache, [0, 1], [2, 4])
    keys, _ = view.update(0, new, new)
    assert keys.shape == (2, H, 3 + 4, D) and view.get_seq_length() == 3
    assert view.attention_mask.tolist() == [[1, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1]]
    assert view.position_ids.tolist() == [[0, 0, 3, 4], [0, 1, 2, 3]]
    assert torch.equal(keys[0, :, :3], k0[0]) and torch.equal(keys[0, :, 5:], new[0, :, 2:])
    assert torch.equal(keys[1, :, 3:], new[1])
    cache.commit(0, list(range(5)), 5)
    cache.commit(1, list(range(4)), 4)
    dense0 = PagedKVView(cache, [0], 0).update(0, new[:, :, :0][:1], new[:, :, :0][:1])[0]
    # The pads never touched row 0's blocks.
    assert torch.equal(dense0[0], torch.cat([k0[0], new[0, :, 2:]], 1))
