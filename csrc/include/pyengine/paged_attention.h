// Paged attention: queries attend to keys/values read in place through a block table (no dense gather).
//
// Spec and NumPy reference: pyengine/batch/paged_attention.py. Layout (the batch engine's PagedKVCache):
// key/value pools [N, P, H_kv, D] float32, slot t of block n at row n * P + t; a row's logical position j
// lives in block table[j / P], slot j % P. Queries are left-padded chunks: of a row's s query columns the
// last `query_len` are real, column i sits at position context_len - s + i and sees keys [0, position]
// (causal within the chunk, everything before it). Pad columns produce zeros.
//
// One call handles one (row, kv head, query column) triple for all G = H / H_kv query heads of the group.
// The slot of every position is looked up once; then, head by head: scores of 16 keys at a time (the
// query in registers, one transpose-and-add tree for the 16 dot products), a vector softmax (max
// subtracted, exp in float lanes), and the weighted sum of the values with the output row in registers,
// divided by the softmax sum at the end. Memory traffic: the row's keys and values once per query column
// (from L1 for the second and later heads of the group); arithmetic 4 * G * D flops per key. float32
// throughout (as SDPA on CPU). Head sizes up to 128 take the vector path; larger ones a scalar loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pyengine/vec.h"

#if PYENGINE_AVX512
// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 intrinsics; not our code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace pyengine {

struct PagedPools {
  const float* keys;    // [N, P, H_kv, D]
  const float* values;  // [N, P, H_kv, D]
  int64_t block_size;   // P
  int64_t num_kv_heads; // H_kv
  int64_t head_dim;     // D
};

#if PYENGINE_AVX512
// The sums of 16 vectors as one vector (lane i = sum of v[i]): a transpose-and-add tree.
inline __m512 paged_reduce16(const __m512* v) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 v01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44), _mm512_shuffle_f32x4(u[0], u[1], 0xEE));
  const __m512 v23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44), _mm512_shuffle_f32x4(u[2], u[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, 0x88), _mm512_shuffle_f32x4(v01, v23, 0xDD));
}

// Asks for the cache lines of a head row of D floats. A sequence's positions sit in blocks scattered over
// the pool, and within a block one kv head's rows are H_kv * D floats apart: too irregular for the
// hardware prefetchers to run ahead on their own (decode, 32 rows of ~220: ~430 -> ~405 us a layer).
inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) _mm_prefetch(reinterpret_cast<const char*>(row + d), _MM_HINT_T0);
}

// One head: scores over the L keys at keys + off[j], softmax, weighted sum of the values at values + off[j].
// DV = ceil(D / 16) vectors per head row, the last one masked to D.
template <int DV>
inline void paged_head(const float* keys, const float* values, const int64_t* off, int64_t L, int64_t D,
                       const float* q, float scale, float* out, float* scores) {
  const __mmask16 tail = lanes(D - 16 * (DV - 1));
  auto mask = [&](int d) { return d == DV - 1 ? tail : __mmask16(0xFFFF); };
  __m512 qv[DV];
  for (int d = 0; d < DV; ++d) qv[d] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(d), q + 16 * d), _mm512_set1_ps(scale));
  __m512 best = _mm512_set1_ps(kNegInf);
  for (int64_t j0 = 0; j0 < L; j0 += 16) {  // 16 scores per transpose-and-add tree
    const int64_t nj = L - j0 < 16 ? L - j0 : 16;
    __m512 acc[16];
    for (int jj = 0; jj < 16; ++jj) {
      acc[jj] = _mm512_setzero_ps();
      if (jj >= nj) continue;
      if (j0 + 16 + jj < L) prefetch_row(keys + off[j0 + 16 + jj], D);  // the next 16 keys' rows
      const float* k = keys + off[j0 + jj];
      for (int d = 0; d < DV; ++d) acc[jj] = _mm512_fmadd_ps(qv[d], _mm512_maskz_loadu_ps(mask(d), k + 16 * d), acc[jj]);
    }
    const __m512 sc = paged_reduce16(acc);
    _mm512_mask_storeu_ps(scores + j0, lanes(nj), sc);
    best = _mm512_mask_max_ps(best, lanes(nj), best, sc);
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(best));
  __m512 total = _mm512_setzero_ps();
  for (int64_t j0 = 0; j0 < L; j0 += 16) {
    const __mmask16 k = lanes(L - j0);
    const __m512 e = exp_neg_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, scores + j0), m));
    _mm512_mask_storeu_ps(scores + j0, k, e);
    total = _mm512_add_ps(total, _mm512_maskz_mov_ps(k, e));
  }
  __m512 acc[DV];
  for (int d = 0; d < DV; ++d) acc[d] = _mm512_setzero_ps();
  for (int64_t j = 0; j < L; ++j) {
    if (j + 8 < L) prefetch_row(values + off[j + 8], D);
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* v = values + off[j];
    for (int d = 0; d < DV; ++d) acc[d] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mask(d), v + 16 * d), acc[d]);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
  for (int d = 0; d < DV; ++d) _mm512_mask_storeu_ps(out + 16 * d, mask(d), _mm512_mul_ps(acc[d], inv));
}
#endif

// One head, any D: the same computation one float at a time.
inline void paged_head_scalar(const float* keys, const float* values, const int64_t* off, int64_t L, int64_t D,
                              const float* q, float scale, float* out, float* scores) {
  float best = kNegInf;
  for (int64_t j = 0; j < L; ++j) {
    float s = 0.0f;
    for (int64_t d = 0; d < D; ++d) s += q[d] * keys[off[j] + d];
    scores[j] = s * scale;
    best = std::max(best, scores[j]);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < L; ++j) total += (scores[j] = std::exp(scores[j] - best));
  std::fill(out, out + D, 0.0f);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) out[d] += scores[j] * values[off[j] + d];
  for (int64_t d = 0; d < D; ++d) out[d] /= total;
}

// Attention of G query heads (q + g * q_head_stride, each D floats) of one query column at position `pos`
// over keys [0, pos] of kv head `kvh`, read through `table`. Writes out + g * o_head_stride.
// `scores` holds pos + 1 floats of scratch, `off` pos + 1 int64.
inline void paged_attention_column(const PagedPools& pools, const int64_t* table, int64_t kvh, int64_t pos,
                                   const float* q, int64_t q_head_stride, float* out, int64_t o_head_stride,
                                   int64_t G, float scale, float* scores, int64_t* off) {
  const int64_t P = pools.block_size, D = pools.head_dim, row = pools.num_kv_heads * D;
  const int64_t L = pos + 1;
  for (int64_t j = 0, blk = 0; j < L; ++blk)  // float offset of position j's row of kv head kvh
    for (int64_t t = 0; t < P && j < L; ++t, ++j) off[j] = (table[blk] * P + t) * row + kvh * D;
  const float *keys = pools.keys, *values = pools.values;
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * q_head_stride;
    float* og = out + g * o_head_stride;
#if PYENGINE_AVX512
    switch ((D + 15) / 16) {
      case 1: paged_head<1>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 2: paged_head<2>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 3: paged_head<3>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 4: paged_head<4>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 5: paged_head<5>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 6: paged_head<6>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 7: paged_head<7>(keys, values, off, L, D, qg, scale, og, scores); continue;
      case 8: paged_head<8>(keys, values, off, L, D, qg, scale, og, scores); continue;
      default: break;
    }
#endif
    paged_head_scalar(keys, values, off, L, D, qg, scale, og, scores);
  }
}

}  // namespace pyengine
