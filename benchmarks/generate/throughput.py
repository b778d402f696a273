"""Generation throughput: a script entry to `pyengine bench generate` (same flags).

    python benchmarks/generate/throughput.py --model smollm2,gpt2 --engines pyengine,transformers \
        --batch 1,8,32 --strategies greedy,sample,beam4 --out benchmarks/results/generate-cpu.jsonl --chart
"""

from __future__ import annotations

import sys

from pyengine.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "generate", *sys.argv[1:]]))
