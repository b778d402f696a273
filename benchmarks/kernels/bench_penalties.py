"""repetition_penalty, min_length, bad_words: transformers' processors vs every impl and the reference.

Context 256 tokens. Called plainly the ops return a new tensor (transformers' contract: inputs are never
modified), so one copy of the [64, 50257] scores (~12.9 MB written) bounds them. The engine owns each
step's logits and calls them with `inplace=True` (`engine.processors.run_chain`): the "<impl> inplace"
rows time that call on a fresh copy of the scores each repeat (the copy, untimed, stands for the step's
own logits copy that the engine pays either way), so they cost only the entries they change. The fused
rows show the same work inside `fused_argmax`.

    .venv/bin/python benchmarks/kernels/bench_penalties.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import itertools

from common import VOCAB, Case, history, impl_fns, logits, parse_args, run_cases, setup_torch

BAD_WORDS = [[50000], [1, 2, 3], [464, 3290], [262], [13, 198, 198], [7], [30000, 5], [11]]
EOS = [50256]


def _impls(op: str, hf_call, args_torch: tuple, ref_fn, args_np: tuple) -> dict:
    impls = {"transformers": hf_call}
    impls.update({label: (lambda fn=fn: fn(*args_torch)) for label, fn in impl_fns(op).items()})
    impls["reference"] = lambda: ref_fn(*args_np)
    return impls


def _inplace(op: str, buf, args: tuple, penalties: tuple | None = None) -> dict:
    """`<impl> inplace` rows: the op writing into `buf` (restored by `_restore` before each repeat).

    `penalties` alternates the first argument after the history (1.3, 1/1.3, ...) so that a repeat whose
    restore is skipped (the warm-up) still sees the same magnitudes.
    """
    from pyengine.engine.processors import takes_inplace

    out = {}
    for label, fn in impl_fns(op).items():
        if not takes_inplace(fn):
            continue
        if penalties:
            cycle = itertools.cycle(penalties)
            out[f"{label} inplace"] = lambda fn=fn, cycle=cycle: fn(buf, args[0], next(cycle), *args[2:], inplace=True)
        else:
            out[f"{label} inplace"] = lambda fn=fn: fn(buf, *args, inplace=True)
    return out


def cases() -> list[Case]:
    import torch
    from transformers.generation import logits_process as hf

    from pyengine.ops import logits as ref

    s, ids = logits(), history(256)
    s_np, ids_np = s.numpy(), ids.numpy()
    buf = s.clone()

    def restore():
        buf.copy_(s)

    def with_inplace(impls: dict, op: str, args: tuple, penalties: tuple | None = None) -> tuple[dict, dict]:
        extra = _inplace(op, buf, args, penalties)
        ref_row = impls.pop("reference")
        return {**impls, **extra, "reference": ref_row}, {label: restore for label in extra}

    rep = hf.RepetitionPenaltyLogitsProcessor(1.3)
    minl = hf.MinLengthLogitsProcessor(1000, EOS)
    bad = hf.NoBadWordsLogitsProcessor(BAD_WORDS, eos_token_id=EOS)
    singles = [w[0] for w in BAD_WORDS if len(w) == 1]
    rep_impls, rep_setup = with_inplace(
        _impls("repetition_penalty", lambda: rep(ids, s), (s, ids, 1.3), ref.repetition_penalty, (s_np, ids_np, 1.3)),
        "repetition_penalty", (ids, 1.3), penalties=(1.3, 1 / 1.3))
    min_impls, min_setup = with_inplace(
        _impls("min_length", lambda: minl(ids, s), (s, ids, 1000, EOS), ref.min_length, (s_np, ids_np, 1000, EOS)),
        "min_length", (ids, 1000, EOS))
    bad_impls, bad_setup = with_inplace(
        _impls("bad_words", lambda: bad(ids, s), (s, ids, BAD_WORDS), ref.bad_words, (s_np, ids_np, BAD_WORDS)),
        "bad_words", (ids, BAD_WORDS))
    out = [
        Case("repetition_penalty(1.3), context 256", rep_impls, repeats={"reference": 5}, setup=rep_setup),
        Case("min_length (active: 256 < 1000)", min_impls, repeats={"reference": 5}, setup=min_setup),
        Case("bad_words (8 words, 4 single-token)", bad_impls, repeats={"reference": 5}, setup=bad_setup),
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
