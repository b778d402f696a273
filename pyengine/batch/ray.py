"""The batch job on Ray: a Ray Data dataset of requests, one `BatchGenerator` per actor of an actor pool.

`generate_on_ray(requests, model_path, ...)` turns the requests (read and validated by the CLI's reader,
from JSONL or Parquet) into a Ray Dataset, maps it in batches over a fixed pool of `GenerateActor`s, and
yields each output record as its batch finishes. Each actor loads the model once and runs a whole batch of
requests through its own `BatchGenerator` (continuous batching inside the batch), so a record is exactly
what the local `pyengine generate` writes for the same request: greedy tokens do not depend on which actor
or batch a request lands in.

Ray is optional: `pip install "ray[data]"`. `ray.init(address)` is called only when Ray is not already
initialised (a test or a user script may have started it with its own resources).

    pyengine generate --prompts in.parquet --output out.jsonl --ray --num-actors 4
    pyengine generate --prompts in.jsonl --output out.parquet --ray --ray-address auto --num-actors 16
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the Dataset API lives in the extra)
    except ImportError:
        raise SystemExit('error: --ray needs Ray Data: pip install "ray[data]"') from None
    return ray


class GenerateActor:
    """One Ray actor: a model and its `BatchGenerator`, fed batches of requests by Ray Data.

    Args:
        model_path: a .gguf file or a transformers-style directory, readable from every node.
        generator_kwargs: `BatchGenerator` arguments (max_batch_size, kv_cache_bytes, block_size, ...).
        defaults: per-request defaults from the command line (a request's own value wins).
        threads: torch threads in this actor.
    """

    def __init__(self, model_path: str, generator_kwargs: dict, defaults: dict, threads: int) -> None:
        import torch

        from pyengine import cli
        from pyengine.batch.engine import BatchGenerator

        torch.set_num_threads(threads)
        model, tokenizer = cli.load(model_path)
        self.gen = BatchGenerator(model, tokenizer, **generator_kwargs)
        self.defaults = defaults

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Columns index/id/prompt/params (JSON text) in; index and the output record (JSON text) out.

        A request the generator rejects (bad parameters, too long for the KV budget) comes back as a record
        with an "error" field, for the driver to stop on or skip (`--on-bad-line`).
        """
        from pyengine import cli

        requests = [
            cli.Request(int(i), json.loads(key), str(prompt), json.loads(params), str(where))
            for i, key, prompt, params, where in zip(
                batch["index"], batch["id"], batch["prompt"], batch["params"], batch["where"]
            )
        ]
        records: dict[int, dict] = {}
        valid = []
        for req in requests:
            try:
                self.gen.validate(cli._batch_request(req, self.defaults))
                valid.append(req)
            except ValueError as err:
                records[req.index] = {"id": req.id, "error": f"{req.where or f'request {req.id!r}'}: {err}"}
        for result in self.gen.generate([cli._batch_request(r, self.defaults) for r in valid]):
            req = valid[result.index]
            records[req.index] = cli._row(req, result)
        order = [r.index for r in requests]
        return {"index": order, "record": [json.dumps(records[i], ensure_ascii=False) for i in order]}


def generate_on_ray(
    requests: list[Any],
    model_path: str,
    *,
    num_actors: int,
    generator_kwargs: dict,
    defaults: dict,
    batch_size: int = 64,
    threads: int = 1,
    address: str | None = None,
) -> Iterator[tuple[int, dict]]:
    """Run `requests` (the CLI's `Request`s) on a Ray actor pool; yield `(index, record)` as batches finish.

    Args:
        num_actors: actors in the pool, one model and one `BatchGenerator` each (one CPU each, `threads`
            torch threads).
        batch_size: requests per Ray Data batch (the unit an actor runs with continuous batching).
        address: the cluster to join (`ray.init(address=...)`, e.g. "auto"); None starts a local one.
    """
    if num_actors < 1 or batch_size < 1:
        raise ValueError(f"num_actors ({num_actors}) and batch_size ({batch_size}) must be >= 1")
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    items = [
        {"index": r.index, "id": json.dumps(r.id), "prompt": r.prompt, "params": json.dumps(r.params),
         "where": r.where}
        for r in requests
    ]  # fmt: skip
    dataset = ray.data.from_items(items).map_batches(
        GenerateActor,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs=dict(model_path=model_path, generator_kwargs=generator_kwargs,
                                   defaults=defaults, threads=threads),  # fmt: skip
        num_cpus=1,
    )
    for row in dataset.iter_rows():
        yield int(row["index"]), json.loads(row["record"])
