"""Sampling hot path: temperature + top-k + top-p + draw, transformers' chain vs ours.

transformers 4.57: TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper (a full vocabulary sort),
softmax, torch.multinomial. Ours: the same ops one by one (native, cpp), and `fused_sample` (one call,
no vocabulary sort), plus the NumPy reference.

    .venv/bin/python benchmarks/kernels/bench_fused_sample.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

from common import BATCH, Case, history, impl_fns, logits, parse_args, run_cases, setup_torch


def cases() -> list[Case]:
    import torch
    from transformers.generation import logits_process as hf

    from pyengine.backends.torch import native
    from pyengine.ops import fused as ref

    s, ids = logits(), history(256)
    s_np, ids_np = s.numpy(), ids.numpy()
    seeds = torch.arange(BATCH)
    chain = hf.LogitsProcessorList([hf.TemperatureLogitsWarper(0.7), hf.TopKLogitsWarper(50), hf.TopPLogitsWarper(0.9)])
    top_p_only = hf.LogitsProcessorList([hf.TemperatureLogitsWarper(0.7), hf.TopPLogitsWarper(0.9)])

    def hf_draw(procs):
        return lambda: torch.multinomial(torch.softmax(procs(ids, s), dim=-1), 1)

    out = []
    for name, procs, k in (("temp0.7+top_k50+top_p0.9+draw", chain, 50), ("temp0.7+top_p0.9+draw (no top-k)", top_p_only, 0)):
        impls = {"transformers": hf_draw(procs)}
        ops = {op: impl_fns(op) for op in ("temperature", "top_k_mask", "top_p_mask")}
        for label in ("native", "cpp"):
            if all(label in fns for fns in ops.values()):
                impls[f"{label} (separate ops)"] = _separate(ops, label, s, k, native.sample_from_scores)
        for label, fn in impl_fns("fused_sample").items():
            impls[f"{label} fused_sample"] = lambda fn=fn, k=k: fn(s, ids, temperature=0.7, top_k=k, top_p=0.9, seed=seeds, step=3)
        impls["reference fused_sample"] = lambda k=k: ref.fused_sample(s_np, ids_np, temperature=0.7, top_k=k, top_p=0.9, seed=0, step=3)
        out.append(Case(name, impls, repeats={"reference fused_sample": 2, "native fused_sample": 3}))
    return out


def _separate(ops, label, s, k, draw):
    temp, top_k, top_p = (ops[op][label] for op in ("temperature", "top_k_mask", "top_p_mask"))

    def run():
        x = temp(s, 0.7)
        if k:
            x = top_k(x, k)
        return draw(top_p(x, 0.9))

    return run


if __name__ == "__main__":
    args = parse_args(__doc__)
    setup_torch(args.threads)
    run_cases(cases(), args.threads, args.repeats, not args.no_write)
