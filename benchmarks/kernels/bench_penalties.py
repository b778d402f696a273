"""repetition_penalty, min_length, bad_words: transformers' processors vs every impl and the reference.

Context 256 tokens. The ops return a new tensor (transformers' contract: inputs are never modified), so
one copy of the [64, 50257] scores (~12.9 MB written) bounds them; the fused rows show the same work
inside `fused_argmax`, where it costs only the history's ids.

    .venv/bin/python benchmarks/kernels/bench_penalties.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

from common import VOCAB, Case, history, impl_fns, logits, parse_args, run_cases, setup_torch

BAD_WORDS = [[50000], [1, 2, 3], [464, 3290], [262], [13, 198, 198], [7], [30000, 5], [11]]
EOS = [50256]


def _impls(op: str, hf_call, args_torch: tuple, ref_fn, args_np: tuple) -> dict:
    impls = {"transformers": hf_call}
    impls.update({label: (lambda fn=fn: fn(*args_torch)) for label, fn in impl_fns(op).items()})
    impls["reference"] = lambda: ref_fn(*args_np)
    return impls


def cases() -> list[Case]:
    import torch
    from transformers.generation import logits_process as hf

    from pyengine.ops import logits as ref

    s, ids = logits(), history(256)
    s_np, ids_np = s.numpy(), ids.numpy()
    rep = hf.RepetitionPenaltyLogitsProcessor(1.3)
    minl = hf.MinLengthLogitsProcessor(1000, EOS)
    bad = hf.NoBadWordsLogitsProcessor(BAD_WORDS, eos_token_id=EOS)
    singles = [w[0] for w in BAD_WORDS if len(w) == 1]
    out = [
        Case("repetition_penalty(1.3), context 256",
             _impls("repetition_penalty", lambda: rep(ids, s), (s, ids, 1.3), ref.repetition_penalty, (s_np, ids_np, 1.3)),
             repeats={"reference": 5}),
        Case("min_length (active: 256 < 1000)",
             _impls("min_length", lambda: minl(ids, s), (s, ids, 1000, EOS), ref.min_length, (s_np, ids_np, 1000, EOS)),
             repeats={"reference": 5}),
        Case("bad_words (8 words, 4 single-token)",
             _impls("bad_words", lambda: bad(ids, s), (s, ids, BAD_WORDS), ref.bad_words, (s_np, ids_np, BAD_WORDS)),
             repeats={"reference": 5}),
    ]
    greedy = {"transformers": lambda: torch.argmax(bad(ids, minl(ids, rep(ids, s))), dim=-1)}
    greedy.update({
        f"{label} fused_argmax": (lambda fn=fn: fn(s, ids, penalty=1.3, min_len=1000, eos_token_ids=EOS, banned_ids=singles))
        for label, fn in impl_fns("fused_argmax").items()
    })
    out.append(Case("greedy step: penalty+min_length+single-token bad words+argmax", greedy, repeats={"native fused_argmax": 5}))
    assert VOCAB > max(max(w) for w in BAD_WORDS)
    return out


if __name__ == "__main__":
    args = parse_args(__doc__)
    setup_torch(args.threads)
    run_cases(cases(), args.threads, args.repeats, not args.no_write)
