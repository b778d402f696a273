"""The screened LM head's limits, one place for every framework (the op: csrc/include/pyengine/top_logits.h;
its torch reference: pyengine/backends/torch/decode.py, `top_logits_reference`).

The screen pays while the head's product streams its weights; by 32 rows it is compute-bound and int8 saves no
arithmetic. SmolLM2's head from memory, 2 threads, full -> top 1 / top 50: 1 row 4.2 -> 1.7 / 1.6 ms, 8 rows
5.1 -> 3.1 / 3.3, 16 rows 6.5 -> 4.9 / 5.4, 32 rows 8.7 -> 9.3 / 10.1. Past ~1k top logits the candidates stop
being a small part of the row (the XLA target's `kMaxK` is the same number).
"""

TOP_LOGITS_MAX_ROWS = 16  # rows of a step the screen takes; more rows compute every logit
TOP_LOGITS_MAX_K = 1024  # the widest top k it screens for; wider computes every logit
