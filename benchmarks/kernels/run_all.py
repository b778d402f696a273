"""Every kernel benchmark in one process (one thread setting, one JSONL batch, ratios from the same run).

    .venv/bin/python benchmarks/kernels/run_all.py [--threads 2] [--repeats 15] [--no-write]
"""

from __future__ import annotations

import bench_fused_sample
import bench_no_repeat_ngram
import bench_penalties
import bench_warpers
from common import parse_args, run_cases, setup_torch

if __name__ == "__main__":
    args = parse_args(__doc__)
    setup_torch(args.threads)
    cases = []
    for module in (bench_fused_sample, bench_warpers, bench_penalties, bench_no_repeat_ngram):
        cases += module.cases()
    run_cases(cases, args.threads, args.repeats, not args.no_write)
