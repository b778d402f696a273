"""Shared timing, environment record and reporting for the kernel benchmarks.

Every case runs in one process on one thread count (torch.set_num_threads), warm-up excluded; we report
the median over repeats with the spread (p10-p90) and the ratio to transformers' timing measured in the
same run, since the machine is shared and absolute numbers drift between runs.
Results append to benchmarks/results/kernels-cpu.jsonl, one JSON object per (case, impl).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "kernels-cpu.jsonl"
BATCH, VOCAB = 64, 50257


@dataclass
class Case:
    """One benchmark: named implementations of the same work, `transformers` as the baseline."""

    name: str
    impls: dict[str, Callable[[], object]]
    repeats: dict[str, int] = field(default_factory=dict)  # fewer repeats for slow references
    setup: dict[str, Callable[[], None]] = field(default_factory=dict)  # per impl, before each call, untimed


def time_fn(fn: Callable[[], object], repeats: int, setup: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call: two untimed warm-up calls, then `repeats` timed ones."""
    for _ in range(2):
        if setup:
            setup()
        fn()
    out = []
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cpu_info() -> dict:
    model, flags = platform.processor(), []
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "sse4")))
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count()}


def environment(threads: int) -> dict:
    import torch

    from pyengine.backends.torch import _C

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout)
    except OSError:
        commit, dirty = "unknown", False
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    return {
        "device": "cpu", **cpu_info(), "threads": threads, "torch": torch.__version__, "transformers": tf_version,
        "commit": commit + ("-dirty" if dirty else ""), "extension": _C.available() or "loaded",
        "extension_build": _C.build_info(),
    }


def run_cases(cases: list[Case], threads: int, repeats: int, write: bool = True) -> list[dict]:
    """Times every impl of every case, prints a table, appends JSONL records."""
    env = environment(threads)
    records = []
    for case in cases:
        base = None
        rows = []
        for impl, fn in case.impls.items():
            times = sorted(time_fn(fn, case.repeats.get(impl, repeats), case.setup.get(impl)))
            med = statistics.median(times)
            p10, p90 = times[len(times) // 10], times[min(len(times) - 1, (9 * len(times)) // 10)]
            if impl == "transformers":
                base = med
            rows.append((impl, med, p10, p90, len(times)))
        print(f"\n{case.name}  (batch {BATCH} x vocab {VOCAB}, {threads} threads)")
        print(f"  {'impl':<34}{'median ms':>11}{'p10-p90 ms':>18}{'n':>5}{'vs transformers':>17}")
        for impl, med, p10, p90, n in rows:
            ratio = f"{base / med:.1f}x" if base else "-"
            print(f"  {impl:<34}{med * 1e3:>11.3f}{f'{p10 * 1e3:.3f}-{p90 * 1e3:.3f}':>18}{n:>5}{ratio:>17}")
            records.append({
                "case": case.name, "impl": impl, "median_s": med, "p10_s": p10, "p90_s": p90, "repeats": n,
                "speedup_vs_transformers": (base / med) if base else None, "batch": BATCH, "vocab": VOCAB,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **env,
            })
    if write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
    return records


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch/at::parallel threads")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-write", action="store_true", help="print only; do not append to the JSONL")
    return p.parse_args()


def setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def logits(seed: int = 0, batch: int = BATCH, vocab: int = VOCAB):
    """LM-like logits: a heavy-tailed spread (Gumbel-ish) so top-p nuclei have realistic sizes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=g) * 2.5 + torch.rand(batch, vocab, generator=g).log().neg().log().neg()


def history(length: int, seed: int = 1, batch: int = BATCH, vocab: int = VOCAB):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)


def impl_fns(op: str) -> dict[str, Callable]:
    """The registered torch impls of `op` (native, cpp when available) plus the NumPy reference."""
    from pyengine.backends.torch.backend import OPS

    return {i.label: i.fn for i in OPS[op] if i.available() is None}
