"""Continuous batching: which sequences run in the next forward passes, and who gets KV blocks.

A step is at most two forwards: one prefill pass over the prompts (or prompt chunks) of one or more
sequences, at most `prefill_chunk` tokens counting left padding, and one decode pass of every sequence that
has exactly one token not yet in the cache. Long prompts are cut into chunks, so decodes of running requests
interleave with them instead of waiting for the whole prompt.

Each `schedule()`:

1. Admits waiting sequences first-come first-served while the running set has room (`max_batch_size`
   rows, counting every sample a request will fork into) and the pool has blocks for the whole prompt plus
   one growth block per running row (a watermark against immediate preemption). Prefix-cached blocks
   count as free.
2. Reserves one slot per decoding sequence, oldest first. When the pool is out of blocks, the youngest
   running sequence is preempted: its blocks are freed and it goes back to the front of the queue with its
   tokens so far; on readmission it recomputes them as a prompt (recompute preemption; its sampler state
   is kept, so its tokens do not change).
3. Fills this step's prefill pass with running sequences that have more than one uncomputed token, oldest
   first, each with its next chunk, while the pass stays within `prefill_chunk` tokens: the sum of the
   chunks when the engine packs them into one row (`packed=True`), rows x longest chunk when it
   left-pads them into a batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pyengine.batch.paged_cache import PagedKVCache


@dataclass
class Sequence:
    """One decoding row: a request's prompt plus the tokens generated so far.

    Fields:
        seq_id: unique id, also the key of its block table in the cache.
        tokens: prompt + generated token ids.
        owner: the engine's per-request state (opaque here).
        fan_out: rows this sequence becomes after its prompt (num_return_sequences); counted at admission.
        num_computed: leading tokens whose keys/values are in the cache.
    """

    seq_id: int
    tokens: list[int]
    owner: Any = None
    fan_out: int = 1
    num_computed: int = 0
    preemptions: int = 0

    @property
    def pending(self) -> int:
        """Tokens to feed before the next token can be chosen."""
        return len(self.tokens) - self.num_computed


@dataclass
class StepBatch:
    """What to run this step: prefill chunks (sequence, tokens to feed) and/or a decode pass."""

    prefill: list[tuple[Sequence, int]] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefill and not self.decode


class Scheduler:
    """FCFS continuous batching over a `PagedKVCache` (see the module docstring for the policy).

    Args:
        cache: the block pool; the scheduler allocates and frees its sequences' blocks.
        max_batch_size: most rows in the running set.
        prefill_chunk: most prompt tokens fed in one forward.
        packed: the prefill pass is one row of concatenated chunks (no padding to count).
    """

    def __init__(self, cache: PagedKVCache, max_batch_size: int, prefill_chunk: int, packed: bool = False) -> None:
        if max_batch_size < 1 or prefill_chunk < 1:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) and prefill_chunk ({prefill_chunk}) must be >= 1"
            )
        self.cache = cache
        self.max_batch_size = max_batch_size
        self.prefill_chunk = prefill_chunk
        self.packed = packed
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: oldest first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A forked sequence (already in the cache) joins the running set right after its parent."""
        self.running.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """Free a finished sequence's blocks at once; its row goes to the next admission."""
        self.running.remove(seq)
        self.cache.free_sequence(seq.seq_id)

    def drop(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is (running or waiting) and free any blocks it holds."""
        self._detach(seq)
        if seq.seq_id in self.cache.seqs:
            self.cache.free_sequence(seq.seq_id)

    def make_running(self, seq: Sequence) -> None:
        """A sequence that holds its blocks again (a reordered beam) runs next step, wherever it was."""
        if not any(s is seq for s in self.running):
            self._detach(seq)
            self.running.append(seq)

    def make_waiting(self, seq: Sequence) -> None:
        """A sequence without blocks (a beam whose source was preempted) recomputes its tokens first."""
        if not any(s is seq for s in self.waiting):
            self._detach(seq)
            self.waiting.appendleft(seq)

    def _detach(self, seq: Sequence) -> None:
        for queue in (self.running, self.waiting):
            for i, other in enumerate(queue):
                if other is seq:
                    del queue[i]
                    return

    def abort(self) -> None:
        """Drop every sequence, waiting or running, and free their blocks."""
        for seq in self.running:
            self.cache.free_sequence(seq.seq_id)
        self.running.clear()
        self.waiting.clear()

    def schedule(self) -> StepBatch:
        self._admit()
        batch = StepBatch(decode=self._reserve_decodes())
        longest = total = 0
        for seq in self.running:
            if seq.pending > 1:
                chunk = min(seq.pending, self.prefill_chunk)
                if self.packed:  # fill the pass: the last chunk may be cut to what is left of the budget
                    chunk = min(chunk, self.prefill_chunk - total)
                    if chunk < 1:
                        break
                elif batch.prefill and (len(batch.prefill) + 1) * max(longest, chunk) > self.prefill_chunk:
                    break
                batch.prefill.append((seq, chunk))
                longest, total = max(longest, chunk), total + chunk
        return batch

    # -- policy ---------------------------------------------------------------------------------------------
    def _rows(self) -> int:
        return sum(s.fan_out for s in self.running)

    def _admit(self) -> None:
        while self.waiting and self._rows() + self.waiting[0].fan_out <= self.max_batch_size:
            seq = self.waiting[0]
            cached = self.cache.add_sequence(seq.seq_id, seq.tokens)
            need = self.cache.blocks_needed(len(seq.tokens)) - self.cache.blocks_needed(cached)
            headroom = self._rows()  # one growth block per running row
            if need + headroom > self.cache.num_free_blocks and self.running:
                self.cache.free_sequence(seq.seq_id)
                return
            if not self.cache.can_append(seq.seq_id, len(seq.tokens) - cached):
                self.cache.free_sequence(seq.seq_id)
                return
            self.cache.reserve(seq.seq_id, len(seq.tokens) - cached)
            seq.num_computed = cached
            self.running.append(self.waiting.popleft())

    def _reserve_decodes(self) -> list[Sequence]:
        decode = []
        for seq in list(self.running):
            if seq.pending != 1 or seq not in self.running:  # preempted earlier in this loop
                continue
            while not self.cache.can_append(seq.seq_id, 1):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.cache.reserve(seq.seq_id, 1)
                decode.append(seq)
        return decode

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache.free_sequence(seq.seq_id)
        seq.num_computed = 0
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
