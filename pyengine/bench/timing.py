"""Timing primitives: timed calls with a contention probe, median and spread, peak memory.

Peak memory is the process high-water mark (VmHWM). Linux lets a process reset it by writing 5 to
/proc/self/clear_refs, so each configuration reports its own peak; elsewhere we fall back to
`resource.getrusage`, whose maximum cannot be reset (stated in the record's `rss_note`).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One timed call: wall seconds, and the share of the machine's CPU other processes used meanwhile."""

    seconds: float
    foreign_cpu: float | None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set size in MiB (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if os.uname().sysname == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def cuda_peak_mb() -> float | None:
    """Peak CUDA memory allocated by torch since the last reset, when torch sees a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed_call(fn: Callable[[], Any]) -> tuple[Sample, Any]:
    """Run `fn` once, measuring wall time and how busy *other* processes kept the machine.

    The foreign share is (machine busy time - this process's CPU time) / machine capacity over the
    call; the cores are shared with other sessions, so a large share flags a run to distrust.
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    before, own0 = _machine_busy(), _own_cpu()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    after, own1 = _machine_busy(), _own_cpu()
    foreign = None
    if before is not None and after is not None and after[1] > before[1]:
        busy = (after[0] - before[0]) / tick
        capacity = (after[1] - before[1]) / tick
        foreign = max(0.0, min(1.0, (busy - (own1 - own0)) / capacity))
    return Sample(seconds, foreign), result


@dataclass(frozen=True)
class Stats:
    """Median with min/max of a rate over repeats."""

    median: float
    min: float
    max: float
    n: int


def rate_stats(work: float, seconds: list[float]) -> Stats:
    """Rates `work / s` for each timing: median, min and max (min rate = slowest run)."""
    if not seconds:
        raise ValueError("rate_stats needs at least one timing")
    rates = [work / s for s in seconds]
    return Stats(statistics.median(rates), min(rates), max(rates), len(rates))
