"""Share of each decode step spent outside the model forward (issue 4's end-to-end target: < 5%).

GPT-2-small (random weights, seed 0), batch 64, 32-token prompts, sampling with temperature 0.8,
top-k 50, top-p 0.9. Decode-only time is the difference between a 25-token and a 1-token run, so the
prefill cancels out. Two sampling paths: transformers-compatible (torch RNG, the op table's warpers and
torch.multinomial) and pyengine's fused sampler (`seed=`: processors + draw in one C++ op).

    .venv/bin/python benchmarks/generate/step_overhead.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from pyengine import GPT2Config, GPT2LMHeadModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    forward_s = [0.0]
    forward = model.forward

    def timed_forward(*a, **k):
        t = time.perf_counter()
        out = forward(*a, **k)
        forward_s[0] += time.perf_counter() - t
        return out

    model.forward = timed_forward
    ids = torch.randint(0, 50257, (args.batch, 32))

    def run(new_tokens: int, extra: dict) -> tuple[float, float]:
        forward_s[0] = 0.0
        t = time.perf_counter()
        model.generate(ids, do_sample=True, max_new_tokens=new_tokens, top_k=50, top_p=0.9, temperature=0.8,
                       pad_token_id=0, **extra)  # fmt: skip
        return time.perf_counter() - t, forward_s[0]

    for name, extra in (("transformers-compatible (torch RNG)", {}), ("fused sampler (seed=)", {"seed": 1})):
        run(2, extra)  # warm-up
        t1, f1 = run(1, extra)
        t2, f2 = run(25, extra)
        step, fwd = t2 - t1, f2 - f1
        print(f"{name}: 24 decode steps {step:.2f} s, forward {fwd:.2f} s, outside {100 * (step - fwd) / step:.1f}%")


if __name__ == "__main__":
    main()
