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


namespace pyengine {

struct PagedPools {
  const float* keys;    // [N, P, H_kv, D]
  const float* values;  // [N, P, H_kv, D]
  int64_t block_size;   // P
  int64_t num_kv_heads; // H_kv
  int64_t head_dim;     // D
};

#if PYENGINE_AVX512
// Asks for the cache lines of `n` floats from `row`. A sequence's positions sit in blocks scattered over
// the pool: the hardware prefetchers do not follow it from one block to the next.
inline void prefetch_floats(const float* row, int64_t n) {
  for (int64_t d = 0; d < n; d += 16) _mm_prefetch(reinterpret_cast<const char*>(row + d), _MM_HINT_T0);
}

// All H query heads of one query column over the L positions whose rows (every kv head, H_kv * D floats)
// start at keys + off[j] / values + off[j]. Two passes over the positions, 16 at a time, every head per
// block: a block's rows (16 x H_kv x D floats) are read from memory once, whole and in order, and reused
// from L1 by the other heads. `q_scaled` is [H, D] (the queries times the scale), `scores` H * L floats.
template <int DV>
inline void paged_row(const float* keys, const float* values, const int64_t* off, int64_t L, int64_t H,
                      int64_t Hkv, int64_t D, const float* q_scaled, float* out, int64_t o_head_stride,
                      float* scores) {
  const int64_t G = H / Hkv, row = Hkv * D;
  const __mmask16 tail = lanes(D - 16 * (DV - 1));
  auto mask = [&](int d) { return d == DV - 1 ? tail : __mmask16(0xFFFF); };
  for (int64_t j0 = 0; j0 < L; j0 += 16) {  // scores: 16 per head per transpose-and-add tree
    const int64_t nj = L - j0 < 16 ? L - j0 : 16;
    for (int64_t jj = j0 + 16; jj < j0 + 32 && jj < L; ++jj) prefetch_floats(keys + off[jj], row);
    for (int64_t h = 0; h < H; ++h) {
      __m512 qv[DV];
      for (int d = 0; d < DV; ++d) qv[d] = _mm512_maskz_loadu_ps(mask(d), q_scaled + h * D + 16 * d);
      const float* kh = keys + (h / G) * D;
      __m512 acc[16];
      for (int jj = 0; jj < 16; ++jj) {
        acc[jj] = _mm512_setzero_ps();
        if (jj >= nj) continue;
        for (int d = 0; d < DV; ++d)
          acc[jj] = _mm512_fmadd_ps(qv[d], _mm512_maskz_loadu_ps(mask(d), kh + off[j0 + jj] + 16 * d), acc[jj]);
      }
      _mm512_mask_storeu_ps(scores + h * L + j0, lanes(nj), reduce16(acc));
    }
  }
  for (int64_t h = 0; h < H; ++h) {  // softmax numerators in place; the sum divides at the end
    float* s = scores + h * L;
    const __m512 m = _mm512_set1_ps(row_max(s, L));
    __m512 total = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < L; j0 += 16) {
      const __mmask16 k = lanes(L - j0);
      const __m512 e = exp_neg_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j0), m));
      _mm512_mask_storeu_ps(s + j0, k, e);
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(k, e));
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    for (int64_t j = 0; j < L; ++j) s[j] *= inv;
    std::fill(out + h * o_head_stride, out + h * o_head_stride + D, 0.0f);
  }
  for (int64_t j0 = 0; j0 < L; j0 += 16) {  // weighted values, the same blocks in the same order
    const int64_t nj = L - j0 < 16 ? L - j0 : 16;
    for (int64_t jj = j0 + 16; jj < j0 + 32 && jj < L; ++jj) prefetch_floats(values + off[jj], row);
    for (int64_t h = 0; h < H; ++h) {
      float* oh = out + h * o_head_stride;
      const float* vh = values + (h / G) * D;
      const float* p = scores + h * L + j0;
      __m512 acc[DV];
      for (int d = 0; d < DV; ++d) acc[d] = _mm512_maskz_loadu_ps(mask(d), oh + 16 * d);
      for (int64_t jj = 0; jj < nj; ++jj) {
        const __m512 w = _mm512_set1_ps(p[jj]);
        for (int d = 0; d < DV; ++d)
          acc[d] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask(d), vh + off[j0 + jj] + 16 * d), acc[d]);
      }
      for (int d = 0; d < DV; ++d) _mm512_mask_storeu_ps(oh + 16 * d, mask(d), acc[d]);
    }
  }
}
#endif

// One head, any D: scores, softmax and weighted sum one float at a time (rows at keys/values + off[j]).
inline void paged_head_scalar(const float* keys, const float* values, const int64_t* off, int64_t L, int64_t D,
                              const float* q_scaled, float* out, float* scores) {
  float best = kNegInf;
  for (int64_t j = 0; j < L; ++j) {
    float s = 0.0f;
    for (int64_t d = 0; d < D; ++d) s += q_scaled[d] * keys[off[j] + d];
    scores[j] = s;
    best = std::max(best, s);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < L; ++j) total += (scores[j] = std::exp(scores[j] - best));
  std::fill(out, out + D, 0.0f);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) out[d] += scores[j] * values[off[j] + d];
  for (int64_t d = 0; d < D; ++d) out[d] /= total;
}

// All H query heads (`q_scaled` [H, D], the queries times the scale) over the L positions whose rows start
// at keys + off[j] / values + off[j], kv head g of a row at + g * D; head h reads kv head h / (H / H_kv) and
// writes out + h * o_head_stride. Scratch: `scores` H * L floats. The vector path up to D = 128, else scalar.
inline void attend_rows(const float* keys, const float* values, const int64_t* off, int64_t L, int64_t H,
                        int64_t Hkv, int64_t D, const float* q_scaled, float* out, int64_t o_head_stride,
                        float* scores) {
#if PYENGINE_AVX512
  switch ((D + 15) / 16) {
    case 1: return paged_row<1>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 2: return paged_row<2>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 3: return paged_row<3>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 4: return paged_row<4>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 5: return paged_row<5>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 6: return paged_row<6>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 7: return paged_row<7>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    case 8: return paged_row<8>(keys, values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
    default: break;
  }
#endif
  const int64_t G = H / Hkv;
  for (int64_t h = 0; h < H; ++h)
    paged_head_scalar(keys + (h / G) * D, values + (h / G) * D, off, L, D, q_scaled + h * D, out + h * o_head_stride,
                      scores);
}

// Attention of all H query heads (q + h * q_head_stride, each D floats) of one query column at position
// `pos` over positions [0, pos], read through `table`; head h reads kv head h / (H / H_kv). Writes
// out + h * o_head_stride. Scratch: `scores` H * (pos + 1) floats, `off` pos + 1 int64, `q_scaled` H * D.
inline void paged_attention_column(const PagedPools& pools, const int64_t* table, int64_t pos, const float* q,
                                   int64_t q_head_stride, float* out, int64_t o_head_stride, int64_t H, float scale,
                                   float* scores, int64_t* off, float* q_scaled) {
  const int64_t P = pools.block_size, D = pools.head_dim, Hkv = pools.num_kv_heads, row = Hkv * D;
  const int64_t L = pos + 1;
  for (int64_t j = 0, blk = 0; j < L; ++blk)  // float offset of position j's row (every kv head)
    for (int64_t t = 0; t < P && j < L; ++t, ++j) off[j] = (table[blk] * P + t) * row;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) q_scaled[h * D + d] = q[h * q_head_stride + d] * scale;
  attend_rows(pools.keys, pools.values, off, L, H, Hkv, D, q_scaled, out, o_head_stride, scores);
}

}  // namespace pyengine
