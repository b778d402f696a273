"""Flax generate: pyengine's jitted generate next to transformers 4.57's Flax generate, same weights, one run.

GPT-2-small (random init from the GPT-2 config; no hub), 32-token prompts, 64 new tokens, batch 1 and 8,
greedy and sampling (transformers' defaults: top_k=50). EOS is disabled so every call produces exactly
64 tokens per row. For each case:
    compile_s   first call (tracing + XLA compilation + one run)
    tok_s       new tokens per second over `--repeats` warm calls (compile excluded)
transformers is measured wrapped in `jax.jit` as its docs recommend (parameters passed as arguments, as
ours are) and, unless `--skip-plain`, as `model.generate(...)` is called plainly (it traces its loop again
on every call, so every call pays compilation; slow to measure).

    .venv/bin/python benchmarks/generate/flax_generate.py --threads 2
Writes JSONL rows to benchmarks/results/flax_generate.jsonl (one per engine × case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _set_threads(threads: int) -> None:
    """Pin the process (and so XLA's thread pool) to `threads` cores."""
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--strategies", default="greedy,sample")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12, help="GPT-2-small has 12; fewer for a smoke run")
    parser.add_argument("--skip-plain", action="store_true", help="skip transformers' un-jitted generate")
    parser.add_argument("--out", default="benchmarks/results/flax_generate.jsonl")
    args = parser.parse_args(argv)
    _set_threads(args.threads)

    import flax
    import jax
    import numpy as np
    import transformers
    from transformers import FlaxGPT2LMHeadModel as HFFlaxGPT2
    from transformers import GPT2Config as HFGPT2Config

    from pyengine.models.gpt2.config import GPT2Config
    from pyengine.models.gpt2.modeling_flax import FlaxGPT2LMHeadModel

    hf_config = HFGPT2Config(n_layer=args.layers)  # GPT-2-small shape: 768 hidden, 12 heads, 50257 vocab
    hf = HFFlaxGPT2(hf_config, seed=0)
    ours = FlaxGPT2LMHeadModel(GPT2Config(n_layer=args.layers), _do_init=False)
    ours.params = hf.params  # the same parameter tree: identical weights
    rng = np.random.default_rng(0)
    common = {"max_new_tokens": args.new_tokens, "eos_token_id": None, "pad_token_id": 0}
    rows = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"threads": args.threads, "device": f"cpu ({os.cpu_count()} cores, shared with other jobs)",
            "model": f"gpt2-small-random ({args.layers} layers)", "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens, "commit": commit, "python": platform.python_version(),
            "versions": {"jax": jax.__version__, "flax": flax.__version__, "transformers": transformers.__version__}}  # fmt: skip

    for batch in [int(b) for b in args.batch.split(",")]:
        ids = rng.integers(0, hf_config.vocab_size, size=(batch, args.prompt_len)).astype(np.int32)
        for strategy in args.strategies.split(","):
            kw = dict(common, do_sample=strategy == "sample")
            key = jax.random.PRNGKey(0)

            # Parameters enter as arguments (as in ours), not as constants folded into the compiled program.
            hf_jit = jax.jit(lambda p, i, k, kw=kw: hf.generate(i, params=p, prng_key=k, **kw).sequences)
            engines = {
                "pyengine-jit": lambda ids=ids, key=key, kw=kw: ours.generate(ids, prng_key=key, **kw).sequences,
                "transformers-jit": lambda ids=ids, key=key, f=hf_jit: f(hf.params, ids, key),
            }
            if not args.skip_plain:
                engines["transformers"] = lambda ids=ids, key=key, kw=kw: hf.generate(ids, prng_key=key, **kw).sequences
            for name, call in engines.items():
                t0 = time.perf_counter()
                call().block_until_ready()
                compile_s = time.perf_counter() - t0
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    call().block_until_ready()
                    times.append(time.perf_counter() - t0)
                best = min(times)
                row = {"kind": "flax_generate", "engine": name, "strategy": strategy, "batch": batch,
                       "compile_s": round(compile_s, 3), "call_s": round(best, 4),
                       "tok_s": round(batch * args.new_tokens / best, 2), **meta}  # fmt: skip
                rows.append(row)
                print(f"{name:17s} {strategy:6s} batch {batch}: {row['tok_s']:8.1f} tok/s  (call {best:.3f}s, "
                      f"first call {compile_s:.2f}s)", flush=True)  # fmt: skip
            ref = next(r for r in rows if r["engine"] == "transformers-jit" and r["strategy"] == strategy and r["batch"] == batch)
            mine = next(r for r in rows if r["engine"] == "pyengine-jit" and r["strategy"] == strategy and r["batch"] == batch)
            print(f"  ratio pyengine-jit / transformers-jit: {mine['tok_s'] / ref['tok_s']:.2f}x", flush=True)
            plain = [r for r in rows if r["engine"] == "transformers" and r["strategy"] == strategy and r["batch"] == batch]
            if plain:
                print(f"  ratio pyengine-jit / transformers (plain generate): {mine['tok_s'] / plain[0]['tok_s']:.2f}x")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
