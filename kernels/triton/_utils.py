"""Shared Triton helpers: the counter-based uniform, order-preserving float keys, block sizes.

`uniform` produces the bits of `pyengine.ops.random.uniform` (splitmix64 finaliser on uint64, top 53 bits),
so a Triton draw equals the reference's for the same (seed, step, row_key).

`ordered_key` maps a float32 to an int64 whose order is the float order (-0.0 folded into +0.0, so ties
are the reference's ties): searching keys by bisection finds an exact k-th value without sorting.
"""

from __future__ import annotations

import triton
import triton.language as tl

# ordered_key(-inf): below every finite key
KEY_NEG_INF = tl.constexpr(-2139095041)


def block_size(n: int, cap: int = 1024) -> int:
    """A power of two covering `n`, at most `cap` (one program loops over blocks of this size)."""
    return max(16, min(triton.next_power_of_2(max(int(n), 1)), cap))


@triton.jit
def mix64(z):
    """The splitmix64 finaliser on uint64 (wrapping products)."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit
def uniform(seed, step, row_key):
    """float64 in [0, 1) from int64 (seed, step, row_key); spec: pyengine/ops/random.py."""
    h = mix64(seed.to(tl.uint64, bitcast=True) + 0x9E3779B97F4A7C15)
    h = mix64(h ^ step.to(tl.uint64, bitcast=True))
    h = mix64(h ^ row_key.to(tl.uint64, bitcast=True))
    return (h >> 11).to(tl.float64) * 1.1102230246251565e-16


@triton.jit
def ordered_key(x):
    """int64 keys with the order of the float32 values `x` (-0.0 and +0.0 share one key)."""
    x = tl.where(x == 0.0, 0.0, x)
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)
