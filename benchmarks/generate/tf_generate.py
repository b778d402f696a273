"""TF generate: pyengine's compiled (XLA) generate next to transformers 4.57's TF generate, same weights, one run.

GPT-2-small (random init from the GPT-2 config; no hub), 32-token prompts, 64 new tokens, batch 1 and 8,
greedy and sampling (transformers' defaults: top_k=50). EOS is disabled so every call produces exactly
64 tokens per row. For each case:
    compile_s   first call (tracing + XLA compilation + one run)
    tok_s       new tokens per second over `--repeats` warm calls (compile excluded)
transformers is measured with XLA (`tf.function(model.generate, jit_compile=True)`, as its docs
recommend) and eagerly (`model.generate`, `--skip-eager` to skip: slow). A last pyengine call with a new
temperature / top_p checks that sampling values do not recompile (`recompiled` in the row).

    .venv/bin/python benchmarks/generate/tf_generate.py --threads 2
Writes JSONL rows to benchmarks/results/tf_generate.jsonl (one per engine x case).
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


def _set_threads(threads: int) -> None:
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
    parser.add_argument("--skip-eager", action="store_true", help="skip transformers' eager TF generate")
    parser.add_argument("--out", default="benchmarks/results/tf_generate.jsonl")
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np

    from pyengine.backends.tf import (
        tf,  # loads TensorFlow after Triton (see pyengine/backends/tf/__init__.py)
    )

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_keras
    import transformers
    from transformers import GPT2Config as HFGPT2Config
    from transformers import TFGPT2LMHeadModel as HFTFGPT2

    from pyengine.models.gpt2.modeling_tf import TFGPT2LMHeadModel

    hf = HFTFGPT2(HFGPT2Config(n_layer=args.layers))  # GPT-2-small shape: 768 hidden, 12 heads, 50257 vocab
    hf(hf.dummy_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = TFGPT2LMHeadModel.from_pretrained(tmp)  # identical weights through tf_model.h5
    rng = np.random.default_rng(0)
    common = {"max_new_tokens": args.new_tokens, "eos_token_id": None, "pad_token_id": 0}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"threads": args.threads, "device": f"cpu ({os.cpu_count()} cores, shared with other jobs)",
            "model": f"gpt2-small-random ({args.layers} layers)", "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens, "commit": commit, "python": platform.python_version(),
            "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                         "transformers": transformers.__version__}}  # fmt: skip
    hf_xla = tf.function(hf.generate, jit_compile=True)
    rows = []
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for batch in [int(b) for b in args.batch.split(",")]:
        ids = tf.constant(rng.integers(0, 50257, size=(batch, args.prompt_len)), tf.int32)
        mask = tf.ones_like(ids)
        for strategy in args.strategies.split(","):
            kw = dict(common, do_sample=strategy == "sample")
            engines = {
                "pyengine-xla": lambda kw=kw, ids=ids, mask=mask: ours.generate(ids, attention_mask=mask, seed=0, **kw),
                "transformers-xla": lambda kw=kw, ids=ids, mask=mask: hf_xla(ids, attention_mask=mask, seed=[0, 0], **kw),
            }
            if not args.skip_eager:
                engines["transformers-eager"] = lambda kw=kw, ids=ids, mask=mask: hf.generate(ids, attention_mask=mask, **kw)
            for name, call in engines.items():
                t0 = time.perf_counter()
                call().numpy()
                compile_s = time.perf_counter() - t0
                times = []
                for _ in range(args.repeats if name != "transformers-eager" else 1):
                    t0 = time.perf_counter()
                    call().numpy()
                    times.append(time.perf_counter() - t0)
                best = min(times)
                row = {"kind": "tf_generate", "engine": name, "strategy": strategy, "batch": batch,
                       "compile_s": round(compile_s, 3), "call_s": round(best, 4),
                       "tok_s": round(batch * args.new_tokens / best, 2), **meta}  # fmt: skip
                if name == "pyengine-xla" and strategy == "sample":
                    # New sampling values reuse the compiled program (turning a warper on too: compiled loops
                    # hold every warper, engine/plan.with_every_warper; tests/tf covers that case).
                    ours.generate(ids, attention_mask=mask, seed=1, temperature=0.7, top_p=0.95, top_k=50, **kw).numpy()
                    before = {k: f.experimental_get_tracing_count() for k, f in ours._pyengine_compiled.items()}
                    ours.generate(ids, attention_mask=mask, seed=2, temperature=0.6, top_p=0.9, top_k=40, **kw).numpy()
                    after = {k: f.experimental_get_tracing_count() for k, f in ours._pyengine_compiled.items()}
                    row["recompiled_for_new_values"] = before != after
                rows.append(row)
                with open(args.out, "a", encoding="utf-8") as f:  # row by row: a cut-short run keeps its rows
                    f.write(json.dumps(row) + "\n")
                print(f"{name:18s} {strategy:6s} batch {batch}: {row['tok_s']:8.1f} tok/s  (call {best:.3f}s, "
                      f"first call {compile_s:.2f}s)", flush=True)  # fmt: skip
            pick = {r["engine"]: r for r in rows if r["strategy"] == strategy and r["batch"] == batch}
            print(f"  ratio pyengine-xla / transformers-xla: {pick['pyengine-xla']['tok_s'] / pick['transformers-xla']['tok_s']:.2f}x")
            if "transformers-eager" in pick:
                print(f"  ratio pyengine-xla / transformers-eager: "
                      f"{pick['pyengine-xla']['tok_s'] / pick['transformers-eager']['tok_s']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
