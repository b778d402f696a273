"""GPU kernel benchmarks: our Triton / CUDA kernels against torch's sort path (and FlashInfer where installed).

Cases, each timed side by side in one run with CUDA events (warm-up excluded, median over repeats), per
shape (batch x vocab: 128 x 131072 and 64 x 50257) and logits dtype (fp32, bf16):
  - top-k 50 + top-p 0.9 sampling, and top-p 0.9 alone: torch's sort path (the native warpers, which mirror
    transformers: sort, softmax, cumsum, scatter, then softmax + multinomial) vs `fused_sample` (triton,
    cuda) vs FlashInfer's `top_k_top_p_sampling_from_logits` / `top_p_sampling_from_probs`;
  - seeded vs unseeded draw: per-request seeds `[B]` vs one seed for the batch (same kernel), and
    torch.multinomial;
  - repetition penalty over a 1024-token history: torch gather/scatter vs triton;
  - beam step top-2K (batch 8 x 4 beams x vocab): torch.topk over the precomputed sum (the target's
    baseline), torch add + topk, and our fused add + top-2K (triton, cuda).
Results append to benchmarks/results/gpu_kernels_<device>.jsonl with device, driver, CUDA / torch / triton /
FlashInfer versions and the commit.

    .venv/bin/python benchmarks/kernels/gpu_bench.py                 # on a CUDA machine
    .venv/bin/python benchmarks/kernels/gpu_bench.py --dry-run       # CPU, Triton interpreter, tiny shapes
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPES = ((128, 131072), (64, 50257))
DRY_SHAPES = ((3, 111),)
DTYPES = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=None, help="comma-separated BxV, e.g. 128x131072,64x50257")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--cases", default="sampling,seeds,penalty,beam", help="comma-separated subset of the cases")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: tiny shapes on CPU tensors under TRITON_INTERPRET=1, 1 repeat, nothing written")
    p.add_argument("--out", default=None, help="JSONL path (default benchmarks/results/gpu_kernels_<device>.jsonl)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    try:
        args.shapes = tuple(tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")) if args.shapes else (
            DRY_SHAPES if args.dry_run else SHAPES)
    except ValueError:
        p.error(f"--shapes: expected BxV[,BxV...], got {args.shapes!r}")
    if any(len(s) != 2 or min(s) < 1 for s in args.shapes):
        p.error(f"--shapes: every shape needs a positive batch and vocab, got {args.shapes}")
    args.dtypes = tuple(d.strip() for d in args.dtypes.split(","))
    bad = [d for d in args.dtypes if d not in ("fp32", "bf16", "fp16")]
    if bad:
        p.error(f"--dtypes: unknown {bad}; choose from fp32, bf16, fp16")
    args.cases = tuple(c.strip() for c in args.cases.split(","))
    bad = [c for c in args.cases if c not in ("sampling", "seeds", "penalty", "beam")]
    if bad:
        p.error(f"--cases: unknown {bad}; choose from sampling, seeds, penalty, beam")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.dry_run:
        args.repeats = 1
        args.no_write = args.no_write or args.out is None
    return args


def environment(device: str) -> dict:
    import torch

    def version(name: str) -> str | None:
        try:
            return importlib.import_module(name).__version__
        except Exception:
            return None

    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = run(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = bool(run(["git", "status", "--porcelain"]))
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)"
    driver = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines()
    from pyengine.backends.torch import cuda as cuda_impl

    return {
        "device": gpu, "driver": driver[0] if driver else None, "cuda": torch.version.cuda, "torch": torch.__version__,
        "triton": version("triton"), "flashinfer": version("flashinfer"), "commit": commit + ("-dirty" if dirty else ""),
        "cuda_kernels": cuda_impl.available() or "loaded",
    }


def timer(device: str) -> Callable[[Callable[[], object], int], list[float]]:
    """Seconds per call: 3 warm-up calls, then `repeats` timed ones (CUDA events on a GPU)."""
    import torch

    def run(fn: Callable[[], object], repeats: int) -> list[float]:
        for _ in range(1 if device == "cpu" else 3):
            fn()
        out = []
        for _ in range(repeats):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return out

    return run


def sampling_cases(b: int, v: int, dtype, device: str, impls: dict) -> list[tuple[str, dict[str, Callable]]]:
    import torch

    from pyengine.backends.torch import native

    g = torch.Generator(device=device).manual_seed(0)
    s = (torch.randn(b, v, generator=g, device=device) * 2.5).to(dtype)
    tokens = torch.zeros(b, 1, dtype=torch.long, device=device)
    seeds = torch.arange(b, device=device)
    out = []
    for name, k in (("top_k50+top_p0.9+draw", 50), ("top_p0.9+draw", 0)):
        def sort_path(k=k):
            x = native.temperature(s.float(), 0.7)
            if k:
                x = native.top_k_mask(x, k)
            return torch.multinomial(torch.softmax(native.top_p_mask(x, 0.9), -1), 1)

        fns = {"torch sort path": sort_path}
        for label, mod in impls.items():
            fns[f"{label} fused_sample"] = lambda mod=mod, k=k: mod.fused_sample(s, tokens, temperature=0.7, top_k=k, top_p=0.9, seed=seeds, step=3)
        fi = _flashinfer()
        if fi is not None and device == "cuda":
            if k:
                fns["flashinfer top_k_top_p_sampling_from_logits"] = lambda fi=fi, k=k: (
                    fi.sampling.top_k_top_p_sampling_from_logits(s.float() / 0.7, k, 0.9))
            else:
                fns["flashinfer top_p_sampling_from_probs"] = lambda fi=fi: (
                    fi.sampling.top_p_sampling_from_probs(torch.softmax(s.float() / 0.7, -1), 0.9))
        out.append((name, fns))
    return out


def seed_cases(b: int, v: int, dtype, device: str, impls: dict) -> list[tuple[str, dict[str, Callable]]]:
    import torch

    s = torch.randn(b, v, device=device).to(dtype)
    tokens = torch.zeros(b, 1, dtype=torch.long, device=device)
    seeds = torch.arange(b, device=device)
    fns: dict[str, Callable] = {"torch multinomial (generator)": lambda: torch.multinomial(torch.softmax(s.float(), -1), 1)}
    for label, mod in impls.items():
        fns[f"{label} one seed"] = lambda mod=mod: mod.fused_sample(s, tokens, seed=7, step=3)
        fns[f"{label} per-request seeds"] = lambda mod=mod: mod.fused_sample(s, tokens, seed=seeds, step=3)
    return [("draw: seeded vs unseeded", fns)]


def penalty_cases(b: int, v: int, dtype, device: str, impls: dict) -> list[tuple[str, dict[str, Callable]]]:
    import torch

    from pyengine.backends.torch import native

    s = torch.randn(b, v, device=device)
    hist = torch.randint(0, v, (b, 1024 if device == "cuda" else 8), device=device)
    fns = {"torch gather/scatter": lambda: native.repetition_penalty(s, hist, 1.2)}
    if "triton" in impls:
        fns["triton repetition_penalty"] = lambda: impls["triton"].repetition_penalty(s, hist, 1.2)
    return [("repetition_penalty1.2 (fp32)", fns)]


def beam_cases(b: int, v: int, dtype, device: str, impls: dict) -> list[tuple[str, dict[str, Callable]]]:
    import torch

    batch, beams = (8, 4) if device == "cuda" else (2, 2)
    lp = torch.log_softmax(torch.randn(batch * beams, v, device=device), -1)
    bs = torch.randn(batch, beams, device=device)
    acc = (lp.view(batch, beams, v) + bs[:, :, None]).view(batch, -1)
    fns = {
        "torch.topk over the sum (baseline)": lambda: torch.topk(acc, 2 * beams),
        "torch add + topk": lambda: torch.topk((lp.view(batch, beams, v) + bs[:, :, None]).view(batch, -1), 2 * beams),
    }
    for label, mod in impls.items():
        fns[f"{label} beam_topk (fused add)"] = lambda mod=mod: mod.beam_topk(lp, bs, 2 * beams)
    return [(f"beam top-2K ({batch} x {beams} beams, fp32)", fns)]


def _flashinfer():
    try:
        import flashinfer

        return flashinfer
    except Exception:
        return None


CASES = {"sampling": sampling_cases, "seeds": seed_cases, "penalty": penalty_cases, "beam": beam_cases}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
    sys.path.insert(0, str(ROOT))
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if device == "cpu" and not args.dry_run:
        print("gpu_bench: no CUDA device (torch.cuda.is_available() is False); use --dry-run to check the script", file=sys.stderr)
        return 2
    from pyengine.backends.torch import cuda, triton

    impls = {"triton": triton}
    if cuda.available() is None and device == "cuda":
        impls["cuda"] = cuda
    env = environment(device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    measure = timer(device)
    records = []
    for b, v in args.shapes:
        for dname in args.dtypes:
            for case in args.cases:
                if case in ("penalty", "beam") and dname != args.dtypes[0]:
                    continue  # fp32-only cases: once per shape
                for name, fns in CASES[case](b, v, dtypes[dname], device, impls):
                    rows = []
                    for impl, fn in fns.items():
                        try:
                            rows.append((impl, statistics.median(measure(fn, args.repeats)), None))
                        except Exception as err:  # one broken peer (e.g. a FlashInfer API change) must not end the run
                            rows.append((impl, None, f"{type(err).__name__}: {err}"))
                    base = rows[0][1]
                    print(f"\n{name}  batch {b} x vocab {v}, {dname}, {env['device']}")
                    for impl, med, error in rows:
                        ratio = base / med if base and med else None
                        shown = f"{med * 1e3:>10.3f} ms{ratio:>8.2f}x vs {rows[0][0]}" if ratio else f"  failed: {error}"
                        print(f"  {impl:<44}{shown}")
                        records.append({"case": name, "impl": impl, "batch": b, "vocab": v, "dtype": dname,
                                        "median_s": med, "error": error, "repeats": args.repeats, "baseline": rows[0][0],
                                        "speedup_vs_baseline": ratio, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **env})
    if not args.no_write:
        slug = re.sub(r"[^a-z0-9]+", "-", env["device"].lower()).strip("-")
        path = pathlib.Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu_kernels_{slug}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        print(f"\nwrote {len(records)} records to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
