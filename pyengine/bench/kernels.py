"""`pyengine bench kernels`: decoding-op timings against transformers' logits processors.

The per-op benchmarks live in benchmarks/kernels/bench_<op>.py (they append JSONL to
benchmarks/results/kernels-cpu.jsonl); when present they are run as subprocesses and their new records
collected. Without them, a small built-in benchmark times every available impl in the torch backend's
op table, plus the NumPy reference, against the equivalent transformers processor at batch 64 x vocab
50257 (the shape where sampling costs 15-40% of a decode step, peer-baselines.md).
"""

from __future__ import annotations

import glob
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pyengine.bench.env import REPO_ROOT

BATCH, VOCAB, HISTORY = 64, 50257, 128
KERNEL_RESULTS = os.path.join(REPO_ROOT, "benchmarks", "results", "kernels-cpu.jsonl")


def discover(kernels_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(kernels_dir, "bench_*.py")))


def run_scripts(scripts: list[str], threads: int, repeats: int, log: Callable[[str], None]) -> list[dict]:
    """Run each bench_<op>.py in its own process and return the records it appended (kind='kernel')."""
    import json

    start = os.path.getsize(KERNEL_RESULTS) if os.path.isfile(KERNEL_RESULTS) else 0
    for script in scripts:
        log(f"running {os.path.relpath(script, REPO_ROOT)}")
        proc = subprocess.run([sys.executable, script, "--threads", str(threads), "--repeats", str(repeats)],
                              cwd=REPO_ROOT, capture_output=True, text=True)
        log(proc.stdout.rstrip())
        if proc.returncode != 0:
            log(f"  {os.path.basename(script)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    if not os.path.isfile(KERNEL_RESULTS):
        return []
    with open(KERNEL_RESULTS, encoding="utf-8") as f:
        f.seek(start)
        return [{"kind": "kernel", **json.loads(line)} for line in f if line.strip()]


def builtin_cases(batch: int = BATCH, vocab: int = VOCAB) -> dict[str, dict[str, Callable[[], Any]]]:
    """op -> {impl label: zero-argument call}, with `transformers` as each op's baseline."""
    import torch
    from transformers import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from pyengine.backends.numpy.backend import OPS as NP_OPS
    from pyengine.backends.torch.backend import OPS

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(batch, vocab, generator=g) * 3  # [B, V]
    tokens = torch.randint(0, vocab, (batch, HISTORY), generator=g)  # [B, T]
    np_scores, np_tokens = scores.numpy().copy(), tokens.numpy().copy()
    spec = {  # op: (args after scores, transformers processor or callable)
        "temperature": ((0.8,), TemperatureLogitsWarper(0.8)),
        "top_k_mask": ((50,), TopKLogitsWarper(50)),
        "top_p_mask": ((0.9,), TopPLogitsWarper(0.9)),
        "min_p_mask": ((0.1,), MinPLogitsWarper(0.1)),
        "repetition_penalty": (("tokens", 1.2), RepetitionPenaltyLogitsProcessor(1.2)),
        "argmax": ((), None),
    }
    cases: dict[str, dict[str, Callable[[], Any]]] = {}
    for op, (args, proc) in spec.items():
        t_args = tuple(tokens if a == "tokens" else a for a in args)
        n_args = tuple(np_tokens if a == "tokens" else a for a in args)
        calls: dict[str, Callable[[], Any]] = {
            "transformers": (lambda p=proc: p(tokens, scores)) if proc else (lambda: torch.argmax(scores, -1))}
        for impl in OPS[op]:
            if impl.available() is None:
                calls[impl.label] = lambda f=impl.fn, a=t_args: f(scores, *a)
        if op in NP_OPS:
            calls["reference"] = lambda f=NP_OPS[op][0].fn, a=n_args: f(np_scores, *a)
        cases[op] = calls
    return cases


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds per call: two warm-up calls, then `repeats` timed ones."""
    fn()
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_builtin(threads: int, repeats: int, env: dict, log: Callable[[str], None],
                batch: int = BATCH, vocab: int = VOCAB) -> list[dict]:
    """Time every case; records carry median/min/max in microseconds and the speedup over transformers."""
    import torch

    torch.set_num_threads(threads)
    records = []
    for op, calls in builtin_cases(batch, vocab).items():
        # The NumPy reference is float64 and slow; fewer repeats keep the run short.
        times = {label: time_calls(fn, max(3, repeats // 4) if label == "reference" else repeats)
                 for label, fn in calls.items()}
        base = statistics.median(times["transformers"])
        for label, ts in times.items():
            med = statistics.median(ts)
            rec = {"kind": "kernel", "op": op, "impl": label, "batch": batch, "vocab": vocab, "threads": threads,
                   "median_us": round(med * 1e6, 1), "min_us": round(min(ts) * 1e6, 1),
                   "max_us": round(max(ts) * 1e6, 1), "repeats": len(ts), "speedup_vs_transformers": round(base / med, 3),
                   **env, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            records.append(rec)
            log(f"  {op:<20} {label:<13} {rec['median_us']:>10.1f} us  {rec['speedup_vs_transformers']:>6.2f}x")
    return records


def kernel_table(records: list[dict]) -> str:
    """Markdown table of built-in kernel records (op x impl, median us and speedup over transformers)."""
    lines = ["| op | impl | median us | min-max us | vs transformers |", "|---|---|---|---|---|"]
    for r in records:
        if "op" in r:
            lines.append(f"| {r['op']} | {r['impl']} | {r['median_us']:.1f} | {r['min_us']:.1f}-{r['max_us']:.1f} | "
                         f"{r['speedup_vs_transformers']:.2f}x |")
    return "\n".join(lines)
