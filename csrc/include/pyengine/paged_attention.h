// Paged attention: queries attend to keys/values read in place through a block table (no dense gather).
//
// Spec and NumPy reference: pyengine/batch/paged_attention.py. Layout (the batch engine's PagedKVCache):
// key/value pools [N, P, H_kv, D] float32, slot t of block n at row n * P + t; a row's logical position j
// lives in block table[j / P], slot j % P. Queries are left-padded chunks: of a row's s query columns the
// last `query_len` are real, column i sits at position context_len - s + i and sees keys [0, position]
// (causal within the chunk, everything before it). Pad columns produce zeros.
//
// One call handles one (row, kv head, query column) triple for all G = H / H_kv query heads of the group:
// each key row is loaded once and dotted with the G queries, the G softmaxes run over the scores, then each
// value row is loaded once and accumulated with G weights. Memory traffic: the row's keys and values once
// per query column; arithmetic 4 * G * D flops per key. float32 throughout (as SDPA on CPU), with the max
// subtracted before exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pyengine/vec.h"

namespace pyengine {

inline float paged_dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if PYENGINE_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y += w * x
inline void paged_axpy(float w, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#if PYENGINE_AVX512
  const __m512 vw = _mm512_set1_ps(w);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vw, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += w * x[i];
}

struct PagedPools {
  const float* keys;    // [N, P, H_kv, D]
  const float* values;  // [N, P, H_kv, D]
  int64_t block_size;   // P
  int64_t num_kv_heads; // H_kv
  int64_t head_dim;     // D
};

// Attention of G query heads (q + g * q_head_stride, each D floats) of one query column at position `pos`
// over keys [0, pos] of kv head `kvh`, read through `table`. Writes out + g * o_head_stride.
// `scores` holds G * (pos + 1) floats of scratch.
inline void paged_attention_column(const PagedPools& pools, const int64_t* table, int64_t kvh, int64_t pos,
                                   const float* q, int64_t q_head_stride, float* out, int64_t o_head_stride,
                                   int64_t G, float scale, float* scores) {
  const int64_t P = pools.block_size, D = pools.head_dim, row = pools.num_kv_heads * D;
  const int64_t L = pos + 1;
  for (int64_t j = 0; j < L; ++j) {  // scores[g, j] = scale * q_g . k_j
    const int64_t slot = table[j / P] * P + j % P;
    const float* k = pools.keys + slot * row + kvh * D;
    for (int64_t g = 0; g < G; ++g) scores[g * L + j] = scale * paged_dot(q + g * q_head_stride, k, D);
  }
  for (int64_t g = 0; g < G; ++g) {  // softmax per head, in place
    float* s = scores + g * L;
    const float m = row_max(s, L);
    float sum = 0.0f;
    for (int64_t j = 0; j < L; ++j) sum += (s[j] = std::exp(s[j] - m));
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < L; ++j) s[j] *= inv;
    std::fill(out + g * o_head_stride, out + g * o_head_stride + D, 0.0f);
  }
  for (int64_t j = 0; j < L; ++j) {  // out_g += p[g, j] * v_j
    const int64_t slot = table[j / P] * P + j % P;
    const float* v = pools.values + slot * row + kvh * D;
    for (int64_t g = 0; g < G; ++g) paged_axpy(scores[g * L + j], v, out + g * o_head_stride, D);
  }
}

}  // namespace pyengine
