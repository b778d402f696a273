"""Counter-based uniform noise: spec and reference. Every backend and kernel produces these exact bits.

A draw depends only on integers the caller owns, never on a generator's hidden state or on the batch:
`uniform(seed, step)` is the noise of one request at one decoding step, the same alone or in any batch
(`row_key` exists for callers that need several independent draws per step, e.g. beams; it defaults to 0).

The algorithm, on 64-bit unsigned integers (inputs taken mod 2**64, i.e. two's complement for negatives):

    mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
               z = (z ^ (z >> 27)) * 0x94D049BB133111EB
               return z ^ (z >> 31)                       # every product mod 2**64 (splitmix64 finaliser)
    h = mix64(seed + 0x9E3779B97F4A7C15)
    h = mix64(h ^ step)
    h = mix64(h ^ row_key)
    u = (h >> 11) * 2**-53                                # 53 bits: exact in float64, u in [0, 1)

Each line is a bijection of its input, so distinct steps (or keys) of one seed never collide.
C++: csrc/include/pyengine/random.h.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    """The splitmix64 finaliser on an unsigned 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform(seed: int, step: int, row_key: int = 0) -> float:
    """The uniform in [0, 1) for (seed, step, row_key); see the module docstring for the exact bits."""
    h = mix64((seed + GOLDEN) & MASK64)
    h = mix64(h ^ (step & MASK64))
    h = mix64(h ^ (row_key & MASK64))
    return (h >> 11) * 2.0**-53
