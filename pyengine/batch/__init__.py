"""High-throughput batch generation: continuous batching over a paged KV cache.

`BatchGenerator(model, tokenizer).generate(requests)` yields results as requests finish; `.run(requests)`
returns them in input order. A request's greedy tokens equal `model.generate()`'s for the same prompt.
"""

from __future__ import annotations

from pyengine.batch.engine import BatchGenerator
from pyengine.batch.paged_cache import PagedKVCache, PagedKVView, blocks_for_budget
from pyengine.batch.request import BatchStats, Completion, Request, Result
from pyengine.batch.scheduler import Scheduler, Sequence

__all__ = [
    "BatchGenerator",
    "BatchStats",
    "Completion",
    "PagedKVCache",
    "PagedKVView",
    "Request",
    "Result",
    "Scheduler",
    "Sequence",
    "blocks_for_budget",
]
