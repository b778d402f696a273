"""Beam search: the `beam_step` op against transformers 4.57's step, and the KV cache's beam reordering.

1. One beam step at batch 8 x 4 beams x vocabulary 50257 (mid-search, EOS on): transformers 4.57's
   vectorised step (log_softmax, + beam scores, topk(2K), `_get_top_k_continuations`, EOS and max-length
   criteria, `_get_running_beams_for_next_iteration`, `_update_finished_beams`, the early-stop check)
   against pyengine's `beam_step` (C++, and the native torch composition), from the same state each call.
2. Beam KV reordering in generate() with a GPT-2-small-shaped random model (12 layers, 12 heads x 64,
   vocabulary 50257), batch 8 x 4 beams, 32-token prompts, 32 new tokens: bytes moved per reorder and
   time per decode step, KVCache.reorder (copy-free once the decode path reads its row table; the first
   reorder, after the prompt, moves only what siblings do not share) against the index_select one it
   replaced, in the same process.
3. Reorder cost against sequence length (KVCache of 12 layers, 32 rows, 12 heads x 64; 128 to 2048
   filled positions; beams that cross lineages at position 0, the worst case for suffix copies):
   index_select, the suffix-copying reorder, and the copy-free one.

Usage: .venv/bin/python benchmarks/generate/beam_step.py [--threads 2] [--repeats 30] [--skip-generate]
Results append to benchmarks/results/beam-cpu.jsonl. Medians; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

import torch
import transformers
from transformers.generation.stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    StoppingCriteriaList,
)

from pyengine.backends.torch import _C
from pyengine.backends.torch.backend import OPS, TorchBackend
from pyengine.backends.torch.cache import KVCache
from pyengine.engine.beam_search import init_state

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "beam-cpu.jsonl"
B, K, V, S, NEW, EOS = 8, 4, 50257, 32, 32, 50256


def median_ms(fn, repeats: int, setup=None) -> float:
    times = []
    for i in range(repeats + 2):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        if i >= 2:  # two warm-up calls
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def hf_step(gm, logits, st, cur, criteria):
    """transformers 4.57 `_beam_search`'s per-step work after the forward (output tensors as it keeps them)."""
    K2 = 2 * K
    top_mask = torch.cat([torch.ones(K, dtype=torch.bool), torch.zeros(K2 - K, dtype=torch.bool)])
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
    log_probs = (log_probs.view(B, K, V) + st["running_scores"][:, :, None]).view(B, K * V)
    topk_lp, topk_seq, topk_idx = gm._get_top_k_continuations(
        log_probs, st["running"], st["running_idx"], cur, S, False, K2, K, V, B)
    hits = criteria(topk_seq[:, :, : cur + 1].reshape(B * K2, cur + 1), None).view(B, K2)
    st["running"], st["running_scores"], st["running_idx"] = gm._get_running_beams_for_next_iteration(
        topk_lp, topk_seq, topk_idx, hits, K)
    st["sequences"], st["beam_scores"], st["beam_idx"], st["is_finished"] = gm._update_finished_beams(
        st["sequences"], topk_seq, st["beam_scores"], topk_lp, st["beam_idx"], topk_idx, st["improvable"],
        st["is_finished"], hits, top_mask, K, cur, S, 1.0, False)
    st["improvable"] = gm._check_early_stop_heuristic(
        st["improvable"], st["running_scores"], st["beam_scores"], st["is_finished"], cur + 1, S + NEW, S, False, 1.0)
    return gm._beam_search_has_unfinished_sequences(st["improvable"], st["is_finished"], hits, False)


def bench_step(repeats: int) -> dict:
    torch.manual_seed(0)
    T, cur = S + NEW, S + 8
    be = TorchBackend()
    state = init_state(be, torch.randint(0, V, (B * K, S)), K, T, EOS)
    for c in range(S, cur):  # a mid-search state: 8 steps taken
        OPS["beam_step"][-1].fn(torch.randn(B * K, V) * 3, state, c, S, T, eos_token_ids=(EOS,))
    logits = torch.randn(B * K, V) * 3
    hf_state = {"running": state.running, "running_scores": state.running_scores,
                "running_idx": state.running_idx.int(), "sequences": state.sequences,
                "beam_scores": state.beam_scores, "beam_idx": state.beam_idx.int(),
                "is_finished": state.is_finished, "improvable": state.improvable[:, None]}  # fmt: skip
    gm = transformers.GenerationMixin()
    criteria = StoppingCriteriaList([MaxLengthCriteria(T), EosTokenCriteria(torch.tensor([EOS]))])
    work = {}

    def fresh_hf():
        work["hf"] = {k: v.clone() for k, v in hf_state.items()}

    def fresh_ours():
        work["ours"] = copy.deepcopy(state)

    ms = {"transformers": median_ms(lambda: hf_step(gm, logits, work["hf"], cur, criteria), repeats, fresh_hf)}
    for impl in OPS["beam_step"]:
        if impl.available() is None:
            ms[impl.label] = median_ms(
                lambda fn=impl.fn: fn(logits, work["ours"], cur, S, T, eos_token_ids=(EOS,)), repeats, fresh_ours)
    return {"case": f"beam_step B{B}xK{K}xV{V}", "ms": ms,
            "speedup_vs_transformers": {k: ms["transformers"] / v for k, v in ms.items() if k != "transformers"}}


def _index_select_reorder(self, index):
    """The reorder this issue replaced: every layer's whole buffers gathered each step."""
    for buffers in (self.keys, self.values):
        for i, buf in enumerate(buffers):
            self.reorder_bytes += buf.numel() * buf.element_size()
            buffers[i] = buf.index_select(0, index)


def bench_generate(workdir: str) -> dict:
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_positions=128))
    hf.save_pretrained(workdir)
    del hf
    from pyengine import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(workdir)
    prompt = torch.randint(0, V, (B, S))
    out, timings = {}, {}
    new_reorder = KVCache.reorder
    for name, reorder in (("index_select", _index_select_reorder), ("kvcache", new_reorder)) * 2:
        KVCache.reorder = reorder
        stats = {"bytes": [], "ms": []}

        def timed(self, index, reorder=reorder, stats=stats):
            before, t0 = self.reorder_bytes, time.perf_counter()
            reorder(self, index)
            stats["ms"].append((time.perf_counter() - t0) * 1e3)
            stats["bytes"].append(self.reorder_bytes - before)

        KVCache.reorder = timed
        t0 = time.perf_counter()
        seq = model.generate(prompt, num_beams=K, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0)
        wall = time.perf_counter() - t0
        KVCache.reorder = new_reorder
        out.setdefault(name, []).append(seq)
        timings.setdefault(name, []).append({
            "bytes_per_reorder": statistics.mean(stats["bytes"]), "bytes_first_reorder": stats["bytes"][0],
            "bytes_per_later_reorder": statistics.mean(stats["bytes"][1:]), "max_bytes_later": max(stats["bytes"][1:]),
            "reorder_ms": statistics.median(stats["ms"]),
            "generate_ms_per_step": wall * 1e3 / len(stats["ms"]), "reorders": len(stats["ms"])})  # fmt: skip
    assert all(torch.equal(out["kvcache"][0], s) for s in out["index_select"] + out["kvcache"]), "outputs differ"
    best = {n: {k: min(r[k] for r in runs) for k in runs[0]} for n, runs in timings.items()}  # best of 2 runs
    old, new = best["index_select"], best["kvcache"]
    return {"case": f"generate GPT-2-small-shaped B{B}xK{K} S{S}+{NEW}", "results": best,
            "bytes_ratio": old["bytes_per_reorder"] / max(new["bytes_per_reorder"], 1),
            "reorder_time_ratio": old["reorder_ms"] / new["reorder_ms"],
            "step_time_ratio": old["generate_ms_per_step"] / new["generate_ms_per_step"]}


def bench_reorder_vs_length(repeats: int) -> dict:
    layers, rows, heads, dim = 12, 32, 12, 64
    swap = torch.arange(rows).view(-1, 4).flip(1).reshape(-1)  # every beam takes a sibling's row
    per_length = {}
    for length in (128, 512, 2048):
        cache = KVCache(layers, rows, heads, dim, length)
        for buf in cache.keys + cache.values:
            buf.normal_()
        cache.length = length
        modes = {"index_select": lambda c=cache: _index_select_reorder(c, swap),
                 "suffix_copy": lambda c=cache: c.reorder(swap)}  # fmt: skip
        per_length[length] = {name: median_ms(fn, repeats) for name, fn in modes.items()}
        cache.rows_for_decode()  # what the decode path does: from now on reorders gather the row table
        per_length[length]["copy_free"] = median_ms(lambda c=cache: c.reorder(swap), repeats)
    return {"case": f"KVCache.reorder vs length, {layers} layers x {rows} rows x {heads} x {dim}", "ms": per_length,
            "copy_free_2048_over_128": per_length[2048]["copy_free"] / per_length[128]["copy_free"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-generate", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {"threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
           "cpp": _C.available() or "available", "machine": platform.processor() or platform.machine(), "load": os.getloadavg()[0]}  # fmt: skip
    records = [bench_step(args.repeats), bench_reorder_vs_length(args.repeats)]
    if not args.skip_generate:
        with tempfile.TemporaryDirectory() as d:
            records.append(bench_generate(d))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        for rec in records:
            rec.update(env=env)
            f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
