// Logits processors on one row of float32 scores (spec: pyengine/ops/logits.py).
//
// Each function writes `out` (a row the caller owns) from `x` (the input row, never modified) and the
// row's history `tok[0, T)`; the `*_inplace_row` variants (the ops' `.out` overloads, used with
// out = scores by the engine) update one row `s` in place. Ids are validated by the caller before any
// kernel runs.
#pragma once

#include <cfloat>
#include <cstdint>
#include <cstring>

#include "pyengine/vec.h"

namespace pyengine {

// Penalise each id of the history once: reading from x (not out) makes repeats idempotent.
inline void repetition_penalty_row(const float* x, float* out, int64_t V, const int64_t* tok, int64_t T,
                                   float penalty) {
  std::memcpy(out, x, V * sizeof(float));
  for (int64_t t = 0; t < T; ++t) {
    const float s = x[tok[t]];
    out[tok[t]] = s < 0 ? s * penalty : s / penalty;
  }
}

// In place: gather every penalised score before writing any, so repeats of an id (the history holds
// many) all write the value penalised once. `old` is scratch for T floats.
// AVX-512 gathers and scatters 8 ids at a time (a scatter of repeated ids writes the same value).
inline void repetition_penalty_inplace_row(float* s, const int64_t* tok, int64_t T, float penalty, float* old) {
  int64_t t = 0;
#if PYENGINE_AVX512
  for (; t + 8 <= T; t += 8)
    _mm256_storeu_ps(old + t, _mm512_i64gather_ps(_mm512_loadu_si512(tok + t), s, sizeof(float)));
#endif
  for (; t < T; ++t) old[t] = s[tok[t]];
  t = 0;
#if PYENGINE_AVX512
  const __m256 p = _mm256_set1_ps(penalty);
  for (; t + 8 <= T; t += 8) {
    const __m256 v = _mm256_loadu_ps(old + t);
    const __mmask8 neg = _mm256_cmp_ps_mask(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 out = _mm256_mask_mul_ps(_mm256_div_ps(v, p), neg, v, p);  // s < 0 ? s * p : s / p
    _mm512_i64scatter_ps(s, _mm512_loadu_si512(tok + t), out, sizeof(float));
  }
#endif
  for (; t < T; ++t) s[tok[t]] = old[t] < 0 ? old[t] * penalty : old[t] / penalty;
}

inline void ban_ids_row(float* out, const int64_t* ids, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[ids[j]] = kNegInf;
}

// Bad words as a flat id list plus per-word lengths: word w is flat[off, off + len[w]).
// Only writes -inf: the same code runs in place.
inline void bad_words_inplace_row(float* out, const int64_t* tok, int64_t T, const int64_t* flat,
                                  const int64_t* lens, int64_t n_words) {
  for (int64_t w = 0, off = 0; w < n_words; off += lens[w], ++w) {
    const int64_t prefix = lens[w] - 1;
    if (prefix > T) continue;
    bool match = true;
    for (int64_t j = 0; j < prefix && match; ++j) match = tok[T - prefix + j] == flat[off + j];
    if (match) out[flat[off + prefix]] = kNegInf;
  }
}

inline void bad_words_row(const float* x, float* out, int64_t V, const int64_t* tok, int64_t T,
                          const int64_t* flat, const int64_t* lens, int64_t n_words) {
  std::memcpy(out, x, V * sizeof(float));
  bad_words_inplace_row(out, tok, T, flat, lens, n_words);
}

// Ban the tokens that followed an earlier occurrence of the last n-1 tokens. O(T) expected: the
// comparison of a window stops at its first mismatch.
inline void no_repeat_ngram_row(const float* x, float* out, int64_t V, const int64_t* tok, int64_t T, int64_t n) {
  std::memcpy(out, x, V * sizeof(float));
  const int64_t* prefix = tok + T - (n - 1);
  for (int64_t start = 0; start + n <= T; ++start) {
    int64_t j = 0;
    while (j < n - 1 && tok[start + j] == prefix[j]) ++j;
    if (j == n - 1) out[tok[start + n - 1]] = kNegInf;
  }
}

// Plain elementwise loops: -O3 -march=native vectorises them (no cross-lane dependency).
inline void temperature_row(const float* x, float* out, int64_t V, float t) {
  for (int64_t i = 0; i < V; ++i) out[i] = x[i] / t;
}

inline void inf_nan_remove_row(const float* x, float* out, int64_t V) {
  for (int64_t i = 0; i < V; ++i) {
    const float v = x[i] != x[i] ? 0.0f : x[i];
    out[i] = v == -kNegInf ? FLT_MAX : (v == kNegInf ? -FLT_MAX : v);  // +-inf -> +-max (transformers 4.57)
  }
}

}  // namespace pyengine
