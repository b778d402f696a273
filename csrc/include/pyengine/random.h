// Counter-based uniform noise: the same bits in C++, NumPy (pyengine/ops/random.py), Triton and CUDA.
//
// u = uniform(seed, step, row_key) hashes the three integers (two's complement, mod 2^64) with the
// splitmix64 finaliser, one round per input, and keeps the top 53 bits:
//   h = mix64(seed + G); h = mix64(h ^ step); h = mix64(h ^ row_key); u = (h >> 11) * 2^-53
// G = 0x9E3779B97F4A7C15. A draw depends only on its own integers, never on a batch position or a
// stream's history, so a request samples the same tokens alone or in any batch.
#pragma once

#include <cstdint>

namespace pyengine {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline double uniform(int64_t seed, int64_t step, int64_t row_key) {
  uint64_t h = mix64(static_cast<uint64_t>(seed) + 0x9E3779B97F4A7C15ULL);
  h = mix64(h ^ static_cast<uint64_t>(step));
  h = mix64(h ^ static_cast<uint64_t>(row_key));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace pyengine
