// Incremental no-repeat-n-gram state: a per-row open-addressing hash table (spec: pyengine/ops/ngram.py).
//
// Layout of one row of the int64 state tensor [B, 1 + 2C] (C a power of two):
//   [0]            how many n-grams of the row's history are recorded (their start positions 0..count-1)
//   [1 + 2s]       slot s: hash of the n-gram's first n-1 tokens
//   [2 + 2s]       slot s: start position + 1 of that n-gram in the history (0 = empty slot)
// Slots hold positions, not tokens: a lookup compares the history itself, so a hash collision can never
// ban a wrong token. Linear probing at <= 50% load keeps every probe chain short; an n-gram already
// present (same n tokens) is not inserted twice, so a chain grows only with distinct continuations.
// Cost per decoding step: O(new tokens) to add, O(chain) to ban, flat in the context length.
#pragma once

#include <cstdint>

#include "pyengine/random.h"
#include "pyengine/vec.h"

namespace pyengine {

inline uint64_t hash_tokens(const int64_t* t, int64_t len) {
  uint64_t h = 0x9E3779B97F4A7C15ULL;
  for (int64_t j = 0; j < len; ++j) h = mix64(h ^ static_cast<uint64_t>(t[j]));
  return h;
}

inline bool same_tokens(const int64_t* a, const int64_t* b, int64_t len) {
  for (int64_t j = 0; j < len; ++j)
    if (a[j] != b[j]) return false;
  return true;
}

// Records the n-grams of tok[0, T) that start at positions [row[0], T - n].
inline void ngram_add_row(int64_t* row, int64_t C, const int64_t* tok, int64_t T, int64_t n) {
  for (int64_t start = row[0]; start + n <= T; ++start) {
    const int64_t* g = tok + start;
    const uint64_t h = hash_tokens(g, n - 1);
    for (uint64_t s = h & (C - 1);; s = (s + 1) & (C - 1)) {
      int64_t* slot = row + 1 + 2 * s;
      if (slot[1] == 0) {
        slot[0] = static_cast<int64_t>(h);
        slot[1] = start + 1;
        break;
      }
      if (static_cast<uint64_t>(slot[0]) == h && same_tokens(tok + slot[1] - 1, g, n)) break;  // known
    }
    row[0] = start + 1;
  }
}

// out[t] = -inf for every recorded n-gram whose first n-1 tokens equal the history's last n-1 tokens.
inline void ngram_ban_row(float* out, const int64_t* row, int64_t C, const int64_t* tok, int64_t T, int64_t n) {
  if (T < n - 1) return;
  const int64_t* prefix = tok + T - (n - 1);
  const uint64_t h = hash_tokens(prefix, n - 1);
  for (uint64_t s = h & (C - 1);; s = (s + 1) & (C - 1)) {
    const int64_t* slot = row + 1 + 2 * s;
    if (slot[1] == 0) return;
    const int64_t pos = slot[1] - 1;
    if (static_cast<uint64_t>(slot[0]) == h && same_tokens(tok + pos, prefix, n - 1)) out[tok[pos + n - 1]] = kNegInf;
  }
}

}  // namespace pyengine
