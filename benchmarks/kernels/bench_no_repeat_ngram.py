"""no_repeat_ngram (n = 3) at contexts 256 / 1024 / 2048: transformers vs stateless and incremental ops.

transformers' NoRepeatNGramLogitsProcessor rebuilds every row's n-gram dict in Python at each step;
`no_repeat_ngram` (cpp) scans the history in C++ (O(T) per row); the incremental n-gram table
(`ngram_table_add` of the newest token + `ngram_ban`) costs the same at every context length.

    .venv/bin/python benchmarks/kernels/bench_no_repeat_ngram.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

from common import Case, history, impl_fns, logits, parse_args, run_cases, setup_torch

N = 3


def cases() -> list[Case]:
    from transformers.generation import logits_process as hf

    s = logits()
    proc = hf.NoRepeatNGramLogitsProcessor(N)
    out = []
    for ctx in (256, 1024, 2048):
        ids = history(ctx, vocab=2000)  # a small id range so n-grams repeat, as in real text
        impls = {"transformers": lambda ids=ids: proc(ids, s)}
        impls.update({label: (lambda fn=fn, ids=ids: fn(s, ids, N)) for label, fn in impl_fns("no_repeat_ngram").items()})
        case = Case(f"no_repeat_ngram(3), context {ctx}", impls, repeats={"transformers": 5, "native": 5})
        table_fns = [impl_fns(op) for op in ("ngram_table_init", "ngram_table_add", "ngram_ban")]
        if all("cpp" in fns for fns in table_fns):
            init, add, ban = (fns["cpp"] for fns in table_fns)
            state = {}

            def fresh(ids=ids, init=init, add=add, state=state):  # the table after the previous step
                state["table"] = add(init(ids.shape[0], ids.shape[1]), ids[:, :-1], N)

            case.impls["cpp ngram table (add 1 token + ban)"] = lambda ids=ids, add=add, ban=ban, state=state: ban(
                s, add(state["table"], ids, N), ids, N)
            case.setup["cpp ngram table (add 1 token + ban)"] = fresh
        out.append(case)
    return out


if __name__ == "__main__":
    args = parse_args(__doc__)
    setup_torch(args.threads)
    run_cases(cases(), args.threads, args.repeats, not args.no_write)
