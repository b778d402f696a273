"""benchmarks/kernels/gpu_bench.py: it imports, checks its arguments, and runs end to end with --dry-run
(tiny shapes, CPU tensors, the Triton interpreter) so the GPU run does not fail on a typo."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "kernels" / "gpu_bench.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_dry_run_times_every_case_and_writes_jsonl(tmp_path):
    out = tmp_path / "gpu.jsonl"
    run = _run("--dry-run", "--dtypes", "fp32", "--shapes", "2x37", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    impls = {r["impl"] for r in records}
    assert {"torch sort path", "triton fused_sample", "triton per-request seeds", "triton beam_topk (fused add)",
            "triton repetition_penalty"} <= impls
    assert all({"device", "driver", "torch", "triton", "commit", "median_s"} <= set(r) for r in records)
    assert all(r["batch"] == 2 and r["vocab"] == 37 for r in records)
    assert [r["impl"] for r in records if r["error"]] == []


@pytest.mark.parametrize("args,message", [
    (("--shapes", "128by5"), "--shapes"),
    (("--dtypes", "fp8"), "--dtypes"),
    (("--cases", "sort"), "--cases"),
    (("--repeats", "0"), "--repeats"),
])
def test_bad_arguments_say_what_to_fix(args, message):
    run = _run("--dry-run", *args)
    assert run.returncode == 2 and message in run.stderr


def test_without_a_gpu_it_points_to_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    run = _run("--cases", "beam")
    assert run.returncode == 2 and "--dry-run" in run.stderr
