// Small-M matrix products for decoding: out[m, n] = (acc ? out[m, n] : 0) + bias[n] + scale[n] * x[m] . w[n].
//
// Header-only, no torch. Decode multiplies a handful of rows (the batch) by a weight matrix that is read
// once per step, so the cost is streaming the weights: the kernels read each weight row once for up to
// four rows of x (register blocks of MB x NB dot products, accumulated in float32), and the caller splits
// the output columns between threads so each core streams its own part of the matrix.
//
// Weight layouts and element types:
//   - "nk": `w` is [N, K] row-major (nn.Linear); float32, bfloat16 (uint16 bits) or int8 (with a
//     per-row float32 `scale`). bf16 and int8 are widened to float32 in registers: fp32 accumulation.
//   - "kn": `w` is [K, N] row-major (GPT-2's Conv1D), float32 only: rank-1 updates of a 64-column panel.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "pyengine/vec.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define PYENGINE_GEMV_AVX512 1
#else
#define PYENGINE_GEMV_AVX512 0
#endif

namespace pyengine {

// Widening of one weight element to float32 (scalar paths and tails).
inline float widen(float w) { return w; }
inline float widen(int8_t w) { return static_cast<float>(w); }
inline float widen(uint16_t w) {
  const uint32_t bits = static_cast<uint32_t>(w) << 16;  // bfloat16 is the top half of a float32
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

#if PYENGINE_GEMV_AVX512
// 16 consecutive weights widened to float32; `mask` selects the valid lanes of a tail (others read as 0).
PYENGINE_KERNEL __m512 load16(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
PYENGINE_KERNEL __m512 load16(const uint16_t* p, __mmask16 mask) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
PYENGINE_KERNEL __m512 load16(const int8_t* p, __mmask16 mask) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}
#endif

// One weight row `w` [K] against MB rows of x: MB dot products. The weight row is read once (from memory
// for the first row block, from L1 for the next), 64 elements per iteration into 4 accumulators per x row.
template <int MB, class W>
PYENGINE_KERNEL void dot_rows(const float* x, int64_t x_stride, const W* w, int64_t K, float* dots) {
#if PYENGINE_GEMV_AVX512
  __m512 acc[MB][4];
  for (int m = 0; m < MB; ++m)
    for (int u = 0; u < 4; ++u) acc[m][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512 wv[4];
    for (int u = 0; u < 4; ++u) wv[u] = load16(w + k + 16 * u, __mmask16(0xFFFF));
    for (int m = 0; m < MB; ++m)
      for (int u = 0; u < 4; ++u)
        acc[m][u] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * x_stride + k + 16 * u), wv[u], acc[m][u]);
  }
  for (; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    const __m512 wv = load16(w + k, mask);
    for (int m = 0; m < MB; ++m)
      acc[m][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + m * x_stride + k), wv, acc[m][0]);
  }
  for (int m = 0; m < MB; ++m)
    dots[m] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]),
                                                 _mm512_add_ps(acc[m][2], acc[m][3])));
#else
  for (int m = 0; m < MB; ++m) {
    float s = 0.f;
    for (int64_t k = 0; k < K; ++k) s += x[m * x_stride + k] * widen(w[k]);
    dots[m] = s;
  }
#endif
}

// dst[0, n) = float(src[0, n)), 16 at a time.
template <class W>
inline void widen_rows(const W* src, int64_t n, float* dst) {
  int64_t i = 0;
#if PYENGINE_GEMV_AVX512
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(src + i, __mmask16(0xFFFF)));
#endif
  for (; i < n; ++i) dst[i] = widen(src[i]);
}

// Four weight rows w[0 .. 4) (row stride K) against four rows of x: 16 dot products in registers, the
// compute-dense block for batches. With `Prefetch` (the first row block of x, the one that streams this
// weight block from memory) the next four weight rows are prefetched as we go: rows are too short for the
// hardware prefetcher to follow four interleaved streams. Later row blocks find the weights in L1 and
// skip the prefetches (they cost ~15% of a step's issue slots when repeated for every row block).
template <bool Prefetch, class W>
PYENGINE_KERNEL void dot_block4x4(const float* x, int64_t x_stride, const W* w, int64_t K, float dots[4][4]) {
#if PYENGINE_GEMV_AVX512
  __m512 acc[4][4];
  for (int m = 0; m < 4; ++m)
    for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_setzero_ps();
  const char* next = reinterpret_cast<const char*>(w + 4 * K);
  constexpr int64_t kStep = 64 / (16 * sizeof(W)) > 0 ? 64 / (16 * sizeof(W)) : 1;  // k-steps per cache line
  auto step = [&](int64_t k, __mmask16 mask, int64_t s) __attribute__((always_inline)) {
    if (Prefetch && s % kStep == 0)
      for (int j = 0; j < 4; ++j) _mm_prefetch(next + (j * K + k) * static_cast<int64_t>(sizeof(W)), _MM_HINT_T0);
    __m512 wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = load16(w + j * K + k, mask);
    for (int m = 0; m < 4; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * x_stride + k);
      for (int j = 0; j < 4; ++j) acc[m][j] = _mm512_fmadd_ps(xv, wv[j], acc[m][j]);
    }
  };
  int64_t k = 0, s = 0;
  for (; k + 16 <= K; k += 16, ++s) step(k, __mmask16(0xFFFF), s);
  if (k < K) step(k, __mmask16((1u << (K - k)) - 1), s);
  _mm512_storeu_ps(&dots[0][0], reduce16(&acc[0][0]));
#else
  for (int m = 0; m < 4; ++m)
    for (int j = 0; j < 4; ++j) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[m * x_stride + k] * widen(w[j * K + k]);
      dots[m][j] = s;
    }
#endif
}

// out[m, n] for rows of x times weight rows [n0, n1) of the "nk" layout, finishing with scale, bias and
// the optional accumulation. One row of x: the thread walks its slice of the matrix in memory order (one
// sequential stream). Several rows: blocks of 4 weight rows x 4 rows of x, each weight block read from
// memory once and from L1 for the following row blocks; leftovers one weight row at a time.
constexpr int64_t kAhead = 48;  // weight rows prefetched ahead of the one-row-at-a-time walk

template <class W>
inline void gemv_nk(const float* x, int64_t x_stride, int64_t M, const W* w, int64_t K, int64_t n0, int64_t n1,
                    float* out, int64_t out_stride, const float* scale, const float* bias, bool acc) {
  auto put = [&](int64_t m, int64_t n, float dot) {
    float v = scale ? dot * scale[n] : dot;
    if (bias) v += bias[n];
    float* o = out + m * out_stride + n;
    *o = acc ? *o + v : v;
  };
  auto one_row = [&](int64_t n) {  // weight row n against every row of x
    float dots[4];
#if PYENGINE_GEMV_AVX512
    // bf16 / int8 rows are consumed 2-4x faster per instruction than the hardware prefetcher fetches
    // them: ask for the row kAhead rows ahead, a line at a time.
    if (!std::is_same_v<W, float> && n + kAhead < n1) {
      const char* ahead = reinterpret_cast<const char*>(w + (n + kAhead) * K);
      for (int64_t b = 0; b < K * static_cast<int64_t>(sizeof(W)); b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
#endif
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float* xm = x + m0 * x_stride;
      const int64_t mb = M - m0 < 4 ? M - m0 : 4;
      switch (mb) {
        case 4: dot_rows<4>(xm, x_stride, w + n * K, K, dots); break;
        case 3: dot_rows<3>(xm, x_stride, w + n * K, K, dots); break;
        case 2: dot_rows<2>(xm, x_stride, w + n * K, K, dots); break;
        default: dot_rows<1>(xm, x_stride, w + n * K, K, dots); break;
      }
      for (int64_t m = 0; m < mb; ++m) put(m0 + m, n, dots[m]);
    }
  };
  int64_t n = n0;
  if (M >= 4) {
    float dots[4][4];
    const int64_t m_full = M - M % 4;
    // bf16 / int8 weights against many rows: widen each block of 4 weight rows once into float32 scratch
    // (exact: both widen without rounding) instead of once per block of x rows.
    constexpr bool narrow = !std::is_same_v<W, float>;
    const bool widen_once = narrow && m_full >= 8;
    std::vector<float> scratch(widen_once ? 4 * K : 0);
    for (; n + 4 <= n1; n += 4) {
      if (widen_once) widen_rows(w + n * K, 4 * K, scratch.data());
      for (int64_t m0 = 0; m0 < m_full; m0 += 4) {
        if (widen_once)
          dot_block4x4<false>(x + m0 * x_stride, x_stride, scratch.data(), K, dots);
        else if (m0 == 0)
          dot_block4x4<true>(x, x_stride, w + n * K, K, dots);
        else
          dot_block4x4<false>(x + m0 * x_stride, x_stride, w + n * K, K, dots);
        for (int m = 0; m < 4; ++m)
          for (int j = 0; j < 4; ++j) put(m0 + m, n + j, dots[m][j]);
      }
      for (int64_t m = m_full; m < M; ++m)  // leftover rows of x, from the weight block now in L1
        for (int j = 0; j < 4; ++j) {
          float d;
          dot_rows<1>(x + m * x_stride, x_stride, w + (n + j) * K, K, &d);
          put(m, n + j, d);
        }
    }
  }
  for (; n < n1; ++n) one_row(n);
}

// Rows of x times columns [n0, n1) of a float32 "kn" weight [K, N]: rank-1 updates of a panel of up to
// 64 columns per row block (no horizontal sums), the panel re-read from L2 by later row blocks.
template <int MB>
PYENGINE_KERNEL void gemv_kn_block(const float* x, int64_t x_stride, const float* w, int64_t K, int64_t N, int64_t n,
                          int64_t width, float* out, int64_t out_stride, const float* bias, bool acc) {
#if PYENGINE_GEMV_AVX512
  constexpr int NV = 4;
  __mmask16 masks[NV];
  for (int j = 0; j < NV; ++j) {
    const int64_t left = width - 16 * j;
    masks[j] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
  }
  __m512 sum[MB][NV];
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < NV; ++j) sum[m][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 wv[NV];
    for (int j = 0; j < NV; ++j) wv[j] = _mm512_maskz_loadu_ps(masks[j], w + k * N + n + 16 * j);
    for (int m = 0; m < MB; ++m) {
      const __m512 xb = _mm512_set1_ps(x[m * x_stride + k]);
      for (int j = 0; j < NV; ++j) sum[m][j] = _mm512_fmadd_ps(xb, wv[j], sum[m][j]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    float* o = out + m * out_stride + n;
    for (int j = 0; j < NV; ++j) {
      if (!masks[j]) continue;
      __m512 v = sum[m][j];
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[j], bias + n + 16 * j));
      if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[j], o + 16 * j));
      _mm512_mask_storeu_ps(o + 16 * j, masks[j], v);
    }
  }
#else
  for (int m = 0; m < MB; ++m)
    for (int64_t c = 0; c < width; ++c) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[m * x_stride + k] * w[k * N + n + c];
      if (bias) s += bias[n + c];
      float* o = out + m * out_stride + n + c;
      *o = acc ? *o + s : s;
    }
#endif
}

inline void gemv_kn(const float* x, int64_t x_stride, int64_t M, const float* w, int64_t K, int64_t N, int64_t n0,
                    int64_t n1, float* out, int64_t out_stride, const float* bias, bool acc) {
  for (int64_t n = n0; n < n1; n += 64) {
    const int64_t width = n1 - n < 64 ? n1 - n : 64;
    int64_t m = 0;
    for (; m + 4 <= M; m += 4)
      gemv_kn_block<4>(x + m * x_stride, x_stride, w, K, N, n, width, out + m * out_stride, out_stride, bias, acc);
    for (; m < M; ++m)
      gemv_kn_block<1>(x + m * x_stride, x_stride, w, K, N, n, width, out + m * out_stride, out_stride, bias, acc);
  }
}

}  // namespace pyengine
