"""Compiles every Triton kernel of pyengine.kernels.triton for a real GPU target, without a GPU.

Triton's compiler (with the ptxas it ships) lowers a kernel to a cubin for `GPUTarget("cuda", arch, 32)`
on any machine; the interpreter that runs the parity tests does not type-check the way the compiler does
(loop-carried types, constexpr globals), so this catches what only a GPU run would otherwise show.
Run as a script (never under TRITON_INTERPRET): `python tests/gpu_kernels/triton_compile_check.py [arch]`.
Prints one line per kernel; exit status 1 when any fails.
"""

from __future__ import annotations

import os
import sys
import warnings

# Argument types by name, shared by the kernels' signatures; pointer element types vary per case below.
INTS = {"V": "i32", "T": "i32", "n": "i32", "N": "i32", "K": "i32", "k2": "i32", "H": "i32", "S": "i32", "P": "i32",
        "D": "i32", "L": "i32", "start": "i32", "n_eos": "i32", "n_ban": "i32", "min_keep": "i32", "row_numel": "i64",
        "block_numel": "i64"}
INDEX_PTRS = ("tokens_ptr", "cur_len_ptr", "min_len_ptr", "eos_ptr", "ban_ptr", "top_k_ptr", "seed_ptr", "step_ptr",
              "out_i_ptr", "slot_i_ptr", "words_ptr", "starts_ptr", "index_ptr", "table_ptr", "src_ptr", "dst_ptr")
F64_PTRS = ("temp_ptr", "top_p_ptr", "min_p_ptr")
F32_PTRS = ("out_ptr", "penalty_ptr", "lp_ptr", "bs_ptr", "out_s_ptr", "slot_s_ptr")


def signature(fn, data: str, consts: dict, data_ptrs: tuple[str, ...] = ()) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name in data_ptrs:
            sig[name] = data
        elif name in consts:
            sig[name] = "constexpr"
        elif name in ("top_k",):
            sig[name] = "i32"
        elif name in ("top_p", "min_p", "filter_value"):
            sig[name] = "fp32"
        elif name in INTS:
            sig[name] = INTS[name]
        elif name.startswith(("stride", "cs", "vs", "ps", "ts")):
            sig[name] = "i64"
        elif name in INDEX_PTRS:
            sig[name] = "*i64"
        elif name in F64_PTRS:
            sig[name] = "*fp64"
        elif name in F32_PTRS:
            sig[name] = "*fp32"
        else:
            sig[name] = data  # the scores / cache pointers
    return sig


def main(arch: int = 90) -> int:
    os.environ.pop("TRITON_INTERPRET", None)
    warnings.simplefilter("ignore")
    import triton
    from pyengine.kernels.triton import beam_search, kv_cache, penalties, sampling, top_k_top_p
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    jobs = []
    for data in ("*fp32", "*bf16", "*fp16"):
        jobs += [
            (sampling._process_logits_kernel, data, dict(BLOCK=1024, IDS_BLOCK=64), 8),
            (sampling._fused_sample_kernel, data, dict(BLOCK=1024, SBLOCK=256, P=sampling.PIVOTS), 8),
            (sampling._argmax_kernel, data, dict(BLOCK=1024), 8),
            (kv_cache._kv_append_kernel, data, dict(BLOCK_D=128), 4),
            (kv_cache._gather_rows_kernel, data, dict(BLOCK=4096), 4),
            (kv_cache._kv_append_paged_kernel, data, dict(BLOCK_D=128), 4),
            (kv_cache._kv_gather_paged_kernel, data, dict(BLOCK_D=128), 4),
            (kv_cache._kv_copy_blocks_kernel, data, dict(BLOCK=4096), 4),
            (penalties._bad_words_kernel, data, dict(MAX_LEN=8), 4),
            (penalties._no_repeat_ngram_kernel, data, dict(BLOCK=256), 4),
        ]
        jobs += [(top_k_top_p._mask_kernel, data, dict(MODE=mode, BLOCK=1024, SBLOCK=256, P=top_k_top_p.PIVOTS), 8)
                 for mode in (top_k_top_p.TOP_K, top_k_top_p.TOP_P, top_k_top_p.MIN_P)]
    jobs.append((beam_search._beam_topk_kernel, "*fp32", dict(BLOCK=1024, SBLOCK=256, P=beam_search.PIVOTS, K2=8), 8))
    failed = 0
    for fn, data, consts, warps in jobs:
        mode = f", MODE={consts['MODE']}" if "MODE" in consts else ""
        name = f"{fn.fn.__name__}[{data[1:]}{mode}]"
        sig = signature(fn, data, consts, ("x_ptr", "out_ptr") if fn is top_k_top_p._mask_kernel else ())
        try:
            triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                           target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
            print(f"ok   {name}")
        except Exception as err:  # report every kernel, not only the first failure
            failed += 1
            print(f"FAIL {name}: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 90))
