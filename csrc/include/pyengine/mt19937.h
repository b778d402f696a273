// The Mersenne Twister stream of PyTorch's CPU generator, walked in bulk.
//
// Header-only, no torch. `Mt19937Stream` holds the three fields of ATen's `at::mt19937` that a draw
// touches (the 624-word state, `left`, `next`) and reproduces its `operator()` exactly: a call first
// decrements `left` and twists the whole state when it reaches 0, then returns the tempered word
// `state[next++]`. Instead of one call per word, `pairs()` walks the stream a twisted block at a time and
// hands the caller the raw words of the pairs it asks for (as ATen's `random64()` pairs them: first word
// high), so a caller who needs only a few of millions of words tempers only those. The twist is written as three
// plain loops with no carried dependency inside a 16-word chunk, which the compiler vectorises.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace pyengine {

struct Mt19937Stream {
  static constexpr int kN = 624, kM = 397;
  uint32_t* state;  // kN words, updated in place
  int32_t left;     // as at::mt19937: words left before the next twist, plus one
  uint32_t next;    // index of the next word to return

  static uint32_t temper(uint32_t y) {
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
  }

  static uint32_t twist(uint32_t u, uint32_t v) {
    const uint32_t mixed = (u & 0x80000000u) | (v & 0x7fffffffu);
    return (mixed >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
  }

  // at::mt19937::next_state: i < N-M reads old words ahead; N-M <= i < N-1 reads words already renewed
  // (i + M - N); the last word wraps to the renewed state[0].
  void regenerate() {
    uint32_t* p = state;
    for (int i = 0; i < kN - kM; ++i) p[i] = p[i + kM] ^ twist(p[i], p[i + 1]);
    for (int i = kN - kM; i < kN - 1; ++i) p[i] = p[i + kM - kN] ^ twist(p[i], p[i + 1]);
    p[kN - 1] = p[kM - 1] ^ twist(p[kN - 1], p[0]);
  }

  // Consumes 2 * n words. For pair j (words 2j and 2j+1 of the walk) calls `visit(j, hi, lo)` with the
  // raw (untempered) words when j is in `wanted` (ascending, `count` entries), and for every pair whose raw
  // low word is 0, wanted or not (the only way a pair can be all-zero after tempering, which callers may
  // need to see). Visits come in ascending j.
  // Leaves the stream exactly where 2 * n calls of at::mt19937::operator() would.
  template <class Visit>
  void pairs(int64_t n, const int64_t* wanted, int64_t count, Visit visit) {
    const int64_t words = 2 * n;
    int64_t w = 0, c = 0;  // words consumed; next entry of `wanted`
    bool have_hi = false;  // a pair split across two twisted blocks
    uint32_t hi = 0;
    while (w < words) {
      if (left <= 1) {  // the next call would twist
        regenerate();
        left = kN + 1;
        next = 0;
      }
      const int64_t avail = left - 1;
      const int64_t take = words - w < avail ? words - w : avail;
      const uint32_t* block = state + next;
      int64_t k = 0;
      if (have_hi) {  // finish the straddling pair with this block's first word
        const int64_t j = w / 2;
        const bool is_wanted = c < count && wanted[c] == j;
        c += is_wanted;
        if (is_wanted || block[0] == 0) visit(j, hi, block[0]);
        have_hi = false;
        k = 1;
      }
      // Whole pairs inside the block: pair j's words are block[k + 2 (j - j0)], block[k + 2 (j - j0) + 1].
      const int64_t j0 = (w + k) / 2, whole = (take - k) / 2;
      bool zero = false;
      int64_t i = k;
#if defined(__AVX512F__)
      for (; i + 16 <= take; i += 16)
        zero |= _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(block + i), _mm512_setzero_si512()) != 0;
#endif
      for (; i < take; ++i) zero |= block[i] == 0;
      if (zero) {  // rare (2^-32 a word): walk the block pair by pair
        for (int64_t t = 0; t < whole; ++t) {
          const bool is_wanted = c < count && wanted[c] == j0 + t;
          c += is_wanted;
          if (is_wanted || block[k + 2 * t + 1] == 0) visit(j0 + t, block[k + 2 * t], block[k + 2 * t + 1]);
        }
      } else {
        for (; c < count && wanted[c] < j0 + whole; ++c) {
          const int64_t t = wanted[c] - j0;
          visit(wanted[c], block[k + 2 * t], block[k + 2 * t + 1]);
        }
      }
      k += 2 * whole;
      if (k < take) {  // the block ends on a high word
        hi = block[k];
        have_hi = true;
      }
      w += take;
      left -= static_cast<int32_t>(take);
      next += static_cast<uint32_t>(take);
    }
  }
};

}  // namespace pyengine
