"""`pyengine bench generate`: tokens/s of pyengine and its peers, measured side by side.

Steps, per model:
1. Build the model files once (models.prepare_model) and start every requested engine; an engine that
   cannot run here becomes a `skip` record with the reason.
2. Per (strategy, batch): one warm-up call per engine (first-call costs are reported as `warmup_s`),
   then `repeats` timed calls, interleaved across engines (A B C, B C A, ...) so that noise from other
   processes on the shared cores hits every engine alike.
3. One `generate` record per engine: tokens/s = batch x new_tokens / wall time of one generate() call
   (32-token prefill included, as in peer-baselines.md), median with min/max, load time, peak RSS.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyengine.bench import timing
from pyengine.bench.engines import EngineUnavailable, parse_strategy
from pyengine.bench.host import start_host
from pyengine.bench.models import ModelSpec, prepare_model, prompt_set


@dataclass
class GenerateConfig:
    """What to run; fields mirror the CLI flags of `pyengine bench generate`."""

    models: Sequence[str]
    engines: Sequence[str]
    batches: Sequence[int]
    strategies: Sequence[str]
    prompt_len: int = 32
    new_tokens: int = 32
    repeats: int = 3
    threads: int = 2
    framework: str = "torch"
    seed: int = 0
    isolate: bool = True
    work_dir: str | None = None

    def __post_init__(self) -> None:
        for s in self.strategies:
            parse_strategy(s)  # fails early, naming the bad strategy
        if self.repeats < 1 or self.new_tokens < 1 or self.prompt_len < 1 or min(self.batches) < 1:
            raise ValueError("repeats, new tokens, prompt length and batch sizes must all be >= 1")


def run_generate(cfg: GenerateConfig, env: dict[str, Any], log: Callable[[str], None] = print,
                 sink: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run every (model, engine, strategy, batch) and return the records (generate and skip).

    `sink` receives each configuration's records as soon as they exist, so a long run that is stopped
    halfway keeps what it measured.
    """
    records: list[dict] = []
    for model in cfg.models:
        spec = prepare_model(model, cfg.work_dir)
        log(f"model {spec.label}: {spec.hf_dir} ({spec.weights})")
        skips: list[dict] = []
        hosts, info = _start_engines(cfg, spec, skips, env, log)
        records += _emit(skips, sink)
        try:
            for strategy in cfg.strategies:
                for batch in cfg.batches:
                    records += _emit(_run_config(cfg, spec, hosts, info, strategy, batch, env, log), sink)
        finally:
            for host in hosts.values():
                host.close()
    return records


def _emit(records: list[dict], sink: Callable[[list[dict]], None] | None) -> list[dict]:
    if sink is not None:
        sink(records)
    return records


def _start_engines(cfg: GenerateConfig, spec: ModelSpec, records: list[dict], env: dict, log: Callable) -> tuple:
    hosts: dict[str, Any] = {}
    info: dict[str, dict] = {}
    for name in cfg.engines:
        try:
            host = start_host(name, spec, cfg.threads, cfg.framework, cfg.isolate)
            load_s = host.load()
        except (EngineUnavailable, RuntimeError) as err:
            note = str(err).strip().splitlines()[0]
            log(f"  skip {name}: {note}")
            records.append(skip_record(name, spec, None, None, note, cfg, env))
            continue
        hosts[name] = host
        info[name] = {**host.describe(), "load_s": round(load_s, 3)}
        log(f"  loaded {name} in {load_s:.1f} s")
    return hosts, info


def _run_config(cfg: GenerateConfig, spec: ModelSpec, hosts: dict, info: dict, strategy: str, batch: int,
                env: dict, log: Callable) -> list[dict]:
    prompts = prompt_set(spec.vocab_size, batch, cfg.prompt_len, cfg.seed)  # [B, S]
    records, active, warmup = [], [], {}
    for name, host in hosts.items():
        reason = host.unsupported(strategy, batch)
        if reason is None:
            host.reset_rss()
            try:
                warmup[name] = host.run(prompts, strategy, cfg.new_tokens, cfg.seed)[0]
                active.append(name)
                continue
            except RuntimeError as err:
                reason = f"failed: {str(err).strip().splitlines()[0]}"
        records.append(skip_record(name, spec, strategy, batch, reason, cfg, env))
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in active}
    for rep in range(cfg.repeats):
        for name in active[rep % max(len(active), 1):] + active[: rep % max(len(active), 1)]:  # rotate order
            samples[name].append(hosts[name].run(prompts, strategy, cfg.new_tokens, cfg.seed))
    for name in active:
        rec = generate_record(name, spec, strategy, batch, samples[name], cfg, info[name], env)
        rec["warmup_s"] = round(warmup[name], 3)
        rec["peak_rss_mb"] = round(hosts[name].peak_rss_mb(), 1)
        log(f"  {spec.label} {strategy:>7} b{batch:<3} {name:<14} {rec['tokens_per_s']:8.1f} tok/s "
            f"[{rec['min']:.1f}-{rec['max']:.1f}]  rss {rec['peak_rss_mb']:.0f} MB")
        records.append(rec)
    return records


def _common(name: str, spec: ModelSpec, strategy: str | None, batch: int | None, cfg: GenerateConfig,
            env: dict) -> dict[str, Any]:
    return {"engine": name, "model": spec.label, "strategy": strategy, "batch": batch,
            "prompt_len": cfg.prompt_len, "new_tokens": cfg.new_tokens, "threads": cfg.threads, **env,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def generate_record(name: str, spec: ModelSpec, strategy: str, batch: int, samples: list[tuple[float, float | None]],
                    cfg: GenerateConfig, info: dict, env: dict) -> dict[str, Any]:
    """One JSONL record; tokens counted are returned sequences x new tokens (beams are not counted)."""
    seconds = [s for s, _ in samples]
    foreign = [f for _, f in samples if f is not None]
    stats = timing.rate_stats(batch * cfg.new_tokens, seconds)
    rec = {"kind": "generate", **_common(name, spec, strategy, batch, cfg, env), **info,
           "tokens_per_s": round(stats.median, 2), "min": round(stats.min, 2), "max": round(stats.max, 2),
           "repeats": stats.n, "seconds": [round(s, 4) for s in seconds],
           "foreign_cpu_max": round(max(foreign), 3) if foreign else None}
    return rec


def skip_record(name: str, spec: ModelSpec, strategy: str | None, batch: int | None, note: str,
                cfg: GenerateConfig, env: dict) -> dict[str, Any]:
    """A record saying an engine did not run (and why), so tables show the gap instead of hiding it."""
    return {"kind": "skip", **_common(name, spec, strategy, batch, cfg, env), "note": note}


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
