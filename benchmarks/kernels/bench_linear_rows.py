"""linear_into (the decode path's C++ product) against the library GEMM (F.linear, MKL) at 1-64 rows.

The decode path sends a float32 product to F.linear when it has more than `LIBRARY_GEMM_MIN_ROWS` rows
(pyengine/backends/torch/decode.py); this benchmark is where that threshold comes from. Shapes are
SmolLM2-135M's (q|k|v, o, gate|up, down, LM head; weights [N, K]) and GPT-2-small's Conv1D weights
([K, N], `weight_kn`, against `x @ w`); each shape cycles through ~150 MB of distinct matrices so the
weights stream from memory as they do in a decode step. GFLOP/s, median of 5; `gb_s` is the weight
stream of linear_into. Caveat: a CPU with a last-level cache larger than 150 MB (the 2-vCPU Xeon of
2026-12-04 reports 480 MB) keeps part of the set cached, and MKL's one-row product looks faster here than
in a whole decode step; the end-to-end A/B there (tokens/s, all products forced to F.linear) is what
decides: GPT-2 b1 48.8 vs 47.8, b8 156 vs 222, SmolLM2 b1 41 vs 46.

    .venv/bin/python benchmarks/kernels/bench_linear_rows.py [--threads 2] [--out benchmarks/results/linear_rows-cpu.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536), "lm_head": (49152, 576)}
KN_SHAPES = {"gpt2_c_attn": (2304, 768), "gpt2_c_proj": (768, 768), "gpt2_c_fc": (3072, 768), "gpt2_mlp_proj": (768, 3072)}


def gflops(fn, flops: float) -> float:
    fn()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1,4,8,16,32,64")
    parser.add_argument("--out", default="benchmarks/results/linear_rows-cpu.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pyengine.backends.torch import cpp

    records = []
    for name, (n, k) in {**SHAPES, **KN_SHAPES}.items():
        kn = name in KN_SHAPES
        mats = [torch.randn(k, n) if kn else torch.randn(n, k) for _ in range(max(1, 150_000_000 // (n * k * 4)))]
        for m in (int(r) for r in args.rows.split(",")):
            x, out = torch.randn(m, k), torch.empty(m, n)
            flops = 2.0 * m * n * k * len(mats)
            ours = gflops(lambda x=x, out=out, mats=mats, kn=kn: [cpp.linear_into(out, x, [w], [], [], False, kn) for w in mats],
                          flops)  # fmt: skip
            lib = gflops(lambda x=x, mats=mats, kn=kn: [x @ w if kn else F.linear(x, w) for w in mats], flops)
            rec = {"shape": name, "layout": "kn" if kn else "nk", "n": n, "k": k, "rows": m,
                   "linear_into_gflops": round(ours, 1), "gb_s": round(ours / (2 * m) * 4, 1),
                   "f_linear_gflops": round(lib, 1), "ratio": round(ours / lib, 2), "threads": args.threads,
                   "cpu": platform.processor() or platform.machine(), "load": os.getloadavg()[0]}  # fmt: skip
            print(f"{name:14s} rows {m:3d}: linear_into {ours:6.1f} ({rec['gb_s']:5.1f} GB/s)  "
                  f"{'x @ w' if kn else 'F.linear'} {lib:6.1f} GFLOP/s  ({ours / lib:.2f}x)")
            records.append(rec)
    with open(args.out, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
