"""top_p_mask and top_k_mask alone: transformers' warpers vs every registered impl and the reference.

    .venv/bin/python benchmarks/kernels/bench_warpers.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

from common import Case, history, impl_fns, logits, parse_args, run_cases, setup_torch


def cases() -> list[Case]:
    from transformers.generation import logits_process as hf

    from pyengine.ops import sampling as ref

    s, ids = logits(), history(8)
    s_np = s.numpy()
    out = []
    for op, hf_proc, arg in (("top_p_mask", hf.TopPLogitsWarper(0.9), 0.9), ("top_k_mask", hf.TopKLogitsWarper(50), 50)):
        impls = {"transformers": lambda p=hf_proc: p(ids, s)}
        impls.update({label: (lambda fn=fn, a=arg: fn(s, a)) for label, fn in impl_fns(op).items()})
        impls["reference"] = lambda op=op, a=arg: getattr(ref, op)(s_np, a)
        out.append(Case(f"{op}({arg})", impls, repeats={"reference": 3}))
    return out


if __name__ == "__main__":
    args = parse_args(__doc__)
    setup_torch(args.threads)
    run_cases(cases(), args.threads, args.repeats, not args.no_write)
