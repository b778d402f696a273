"""`pyengine bench ...`: the benchmark harness's command line (registered into `pyengine`'s parser).

    pyengine bench generate --model smollm2,gpt2 --engines pyengine,transformers,ctranslate2,llamacpp \
        --batch 1,8,32 --strategies greedy,sample,beam4 --prompt-len 32 --new-tokens 32 --repeats 3 \
        --threads 2 --baseline transformers --out benchmarks/results/generate-cpu.jsonl --chart
    pyengine bench kernels --out benchmarks/results/kernels-builtin-cpu.jsonl
    pyengine bench report benchmarks/results/generate-cpu.jsonl --baseline transformers --chart
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pyengine.bench import report
from pyengine.bench.env import REPO_ROOT
from pyengine.bench.generation import stderr_log

DEFAULT_OUT = os.path.join("benchmarks", "results", "generate-cpu.jsonl")


def _csv(kind: type = str) -> Any:
    def parse(text: str) -> list:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}: {text!r}") from err

    return parse


def register(subparsers: Any) -> None:
    """Add `bench` with its `generate`, `kernels` and `report` subcommands to `pyengine`'s parser."""
    bench = subparsers.add_parser("bench", help="benchmark pyengine against its peers")
    sub = bench.add_subparsers(dest="bench_command", required=True)
    _add_generate(sub)
    _add_kernels(sub)
    _add_report(sub)


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="generation tokens/s, pyengine and peers side by side")
    p.add_argument("--model", type=_csv(), default=["smollm2"],
                   help="comma list of gpt2 (GPT-2 small, random weights), smollm2, a checkpoint dir, a .gguf")
    p.add_argument("--framework", default="torch", help="pyengine's framework (torch only for now)")
    p.add_argument("--engines", type=_csv(), default=["pyengine", "transformers"],
                   help="comma list of pyengine, transformers, ctranslate2, llamacpp, transformers-tf, transformers-flax")
    p.add_argument("--batch", type=_csv(int), default=[1, 8, 32])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--strategies", type=_csv(), default=["greedy", "sample", "beam4"], help="greedy, sample, beamN")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=0, help="prompt set and sampling seed")
    p.add_argument("--baseline", default="transformers", help="engine the ratios are taken against")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSONL output, written as results arrive (replaced unless --append)")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    p.add_argument("--chart", action="store_true", help="also write OUT.png (matplotlib) and OUT.html")
    p.add_argument("--in-process", action="store_true",
                   help="run engines in this process (faster start, shared RSS) instead of one worker each")
    p.add_argument("--work-dir", help="where built model files are cached (default: $TMPDIR/pyengine-bench)")
    p.set_defaults(func=cmd_generate)


def _add_kernels(sub: Any) -> None:
    p = sub.add_parser("kernels", help="decoding-op timings vs transformers' processors")
    p.add_argument("--kernels-dir", default=os.path.join(REPO_ROOT, "benchmarks", "kernels"),
                   help="where bench_<op>.py scripts live; run when present")
    p.add_argument("--builtin", action="store_true", help="run the built-in op benchmark even if scripts exist")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "kernels-builtin-cpu.jsonl"),
                   help="JSONL for the built-in benchmark and collected script records")
    p.set_defaults(func=cmd_kernels)


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="ratio table, chart and HTML from existing JSONL files")
    p.add_argument("inputs", nargs="+", help="JSONL files written by `pyengine bench generate`")
    p.add_argument("--baseline", default="transformers")
    p.add_argument("--chart", action="store_true", help="write PNG + HTML next to the first input")
    p.set_defaults(func=cmd_report)


def cmd_generate(args: argparse.Namespace) -> int:
    from pyengine.bench.env import environment
    from pyengine.bench.generation import GenerateConfig, run_generate

    try:
        cfg = GenerateConfig(models=args.model, engines=args.engines, batches=args.batch, strategies=args.strategies,
                             prompt_len=args.prompt_len, new_tokens=args.new_tokens, repeats=args.repeats,
                             threads=args.threads, framework=args.framework, seed=args.seed,
                             isolate=not args.in_process, work_dir=args.work_dir)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    _check_engines(args.engines)
    if not args.append:
        report.write_jsonl(args.out, [])  # start a fresh file; records are appended as they are measured
    records = run_generate(cfg, environment(), log=stderr_log,
                           sink=lambda recs: report.write_jsonl(args.out, recs, append=True))
    all_records = report.read_jsonl([args.out]) if args.append else records
    _finish(all_records, args.baseline, args.out, args.chart)
    return 0


def _check_engines(engines: list[str]) -> None:
    from pyengine.bench.engines import engine_names

    unknown = [e for e in engines if e not in engine_names()]
    if unknown:
        raise SystemExit(f"error: unknown engine(s) {', '.join(unknown)}; choose from {', '.join(engine_names())}")


def _finish(records: list[dict], baseline: str, out: str, chart: bool) -> None:
    print(report.text_report(records, baseline))
    print(f"\nwrote {out}", file=sys.stderr)
    if not chart:
        return
    stem = os.path.splitext(out)[0]
    problem = report.write_chart(records, stem + ".png")
    if problem:
        print(f"note: {problem}", file=sys.stderr)
    report.write_html(records, baseline, stem + ".html", None if problem else stem + ".png")
    print(f"wrote {stem}.html" + ("" if problem else f" and {stem}.png"), file=sys.stderr)


def cmd_kernels(args: argparse.Namespace) -> int:
    from pyengine.bench import kernels
    from pyengine.bench.env import environment

    scripts = kernels.discover(args.kernels_dir)
    records: list[dict] = []
    if scripts and not args.builtin:
        records = kernels.run_scripts(scripts, args.threads, args.repeats, stderr_log)
    else:
        if not scripts:
            stderr_log(f"no bench_<op>.py in {args.kernels_dir}: running the built-in op benchmark")
        records = kernels.run_builtin(args.threads, args.repeats, environment(), stderr_log, args.batch, args.vocab)
        print(kernels.kernel_table(records))
    report.write_jsonl(args.out, records)
    print(f"wrote {len(records)} records to {args.out}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    records = report.read_jsonl(args.inputs)
    _finish(records, args.baseline, args.inputs[0], args.chart)
    return 0
