"""Triton kernels of pyengine, installed as `pyengine.kernels.triton` (one launcher per kernel).

    sampling.py      process_logits (penalty + bans), fused_sample (warpers + seeded draw, no sort), argmax
    top_k_top_p.py   top_k_mask, top_p_mask, min_p_mask (the unfused warpers)
    penalties.py     bad_words, no_repeat_ngram
    beam_search.py   beam_topk (beam scores added, top 2K over beams x vocab)
    kv_cache.py      kv_append, kv_gather_rows (beam reorder), kv_append_paged, kv_gather_paged, kv_copy_blocks

The torch-facing wrappers (argument checks, fallbacks, registration) are in pyengine/backends/torch/triton.py.
Modules here import triton at import time; `@triton.jit` picks the interpreter when TRITON_INTERPRET=1 is
set at that moment, so import them lazily.
"""
