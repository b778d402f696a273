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
//   - "kn": `w` is [K, N] row-major (GPT-2's Conv1D), float32 only: rows of w streamed into partial sums
//     held in L1.
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
// The same for 16 valid lanes: plain loads, which an FMA can take as its memory operand (a zero-masked
// load cannot: one more instruction per vector, ~6% of a batch-1 float32 step).
PYENGINE_KERNEL __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
PYENGINE_KERNEL __m512 load16(const uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
PYENGINE_KERNEL __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#endif

// One weight row `w` [K] against one row of x (the last < R weight rows of a slice).
template <class W>
PYENGINE_KERNEL float dot_row(const float* x, const W* w, int64_t K) {
#if PYENGINE_GEMV_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + k), load16(w + k, mask), acc);
  }
  return _mm512_reduce_add_ps(acc);
#else
  float s = 0.f;
  for (int64_t k = 0; k < K; ++k) s += x[k] * widen(w[k]);
  return s;
#endif
}

// dst[0, n) = float(src[0, n)), 16 at a time.
template <class W>
inline void widen_rows(const W* src, int64_t n, float* dst) {
  int64_t i = 0;
#if PYENGINE_GEMV_AVX512
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(src + i));
#endif
  for (; i < n; ++i) dst[i] = widen(src[i]);
}

// R weight rows w[0 .. R) (row stride K) against MB rows of x: MB x R dot products in registers
// (dots[m * R + j]), each weight vector loaded once for all MB rows, the R rows R sequential streams a row
// apart. With `Prefetch`, lines [pf_first, pf_first + pf_count) of each of the next block's R rows (from
// `next`, `next_row` bytes apart) are prefetched as we go, spread evenly over the pass: rows are too short
// for the hardware prefetcher to follow several interleaved streams. Each row's line i is fetched at the
// same point of its pass, so every line arrives about one block ahead of its use.
template <int MB, int R, bool Prefetch, class W>
PYENGINE_KERNEL void dot_block(const float* x, int64_t x_stride, const W* w, int64_t K, float* dots,
                               const char* next = nullptr, int64_t next_row = 0, int64_t pf_first = 0,
                               int64_t pf_count = 0) {
#if PYENGINE_GEMV_AVX512
  __m512 acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < R; ++j) acc[m][j] = _mm512_setzero_ps();
  constexpr int64_t kStep = 64 / (16 * sizeof(W)) > 0 ? 64 / (16 * sizeof(W)) : 1;  // k-steps per cache line
  const int64_t line_steps = ((K + 15) / 16 + kStep - 1) / kStep;
  const int64_t per_step = Prefetch ? (pf_count + line_steps - 1) / line_steps : 0;  // line positions per line step
  int64_t pos = pf_first;
  const int64_t end = pf_first + pf_count;
  auto step = [&](int64_t k, auto full, __mmask16 mask, int64_t s) __attribute__((always_inline)) {
    if (Prefetch && s % kStep == 0)
      for (int64_t i = 0; i < per_step && pos < end; ++i, ++pos)
        for (int j = 0; j < R; ++j) _mm_prefetch(next + j * next_row + 64 * pos, _MM_HINT_T0);
    __m512 wv[R];
    for (int j = 0; j < R; ++j) wv[j] = full ? load16(w + j * K + k) : load16(w + j * K + k, mask);
    for (int m = 0; m < MB; ++m) {
      const float* xm = x + m * x_stride + k;
      const __m512 xv = full ? _mm512_loadu_ps(xm) : _mm512_maskz_loadu_ps(mask, xm);
      for (int j = 0; j < R; ++j) acc[m][j] = _mm512_fmadd_ps(xv, wv[j], acc[m][j]);
    }
  };
  int64_t k = 0, s = 0;
  for (; k + 16 <= K; k += 16, ++s) step(k, std::true_type{}, __mmask16(0xFFFF), s);
  if (k < K) step(k, std::false_type{}, __mmask16((1u << (K - k)) - 1), s);
  if constexpr (MB * R == 16) {
    _mm512_storeu_ps(dots, reduce16(&acc[0][0]));
  } else {
    for (int m = 0; m < MB; ++m)
      for (int j = 0; j < R; ++j) dots[m * R + j] = _mm512_reduce_add_ps(acc[m][j]);
  }
#else
  for (int m = 0; m < MB; ++m)
    for (int j = 0; j < R; ++j) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[m * x_stride + k] * widen(w[j * K + k]);
      dots[m * R + j] = s;
    }
#endif
}

// dot_block for a row count known only at run time, 1 <= mb <= MBMax.
template <int MBMax, int R, bool Prefetch, class W>
inline void dot_block_rows(int64_t mb, const float* x, int64_t x_stride, const W* w, int64_t K, float* dots,
                           const char* next = nullptr, int64_t next_row = 0, int64_t pf_first = 0,
                           int64_t pf_count = 0) {
  if constexpr (MBMax > 1) {
    if (mb < MBMax)
      return dot_block_rows<MBMax - 1, R, Prefetch>(mb, x, x_stride, w, K, dots, next, next_row, pf_first, pf_count);
  }
  dot_block<MBMax, R, Prefetch>(x, x_stride, w, K, dots, next, next_row, pf_first, pf_count);
}

// out[m, n] for rows of x times weight rows [n0, n1) of the "nk" layout, finishing with scale, bias and
// the optional accumulation. Blocks of R weight rows x up to MB rows of x in registers: each weight block
// is read from memory by the first row block (which prefetches the next) and from L1 by the others.
// Leftover weight rows go one at a time.
//   - Up to 7 rows of x: R = 4, MB = 4 (the rows past the last full block, all of them at batch 1, take
//     the weight block in one more pass). Batch 1 float32 leaves the streaming to the hardware prefetcher:
//     34 against 28 GB/s with prefetches; bf16 / int8 rows are consumed 2-4x faster per instruction than
//     it fetches them, so they prefetch, up to 3 rows four blocks ahead (a block is read too fast for one
//     block's lead to cover the memory latency): SmolLM2 batch-1 steps, bf16 9.4 -> 8.7-8.8 ms, int8 5.4-5.6
//     -> 4.4-4.6 ms (two blocks ahead: 9.2 ms; eight: 9.3-9.5; from 4 rows, two blocks ahead lost 5%).
//   - 8 to 15 rows: R = 3, MB = 8 (24 accumulators), half as many passes over each block: 27 against
//     23 GB/s for GPT-2-small at batch 8.
//   - 16 rows and more: R = 6, MB = 4 (24 accumulators). The step is compute-bound by then, and what limits
//     it is reading x again for every block of weight rows (x no longer fits in L1 beside the weights):
//     64 / R bytes of x per FMA, so six weight rows per pass halve it. SmolLM2-135M's layer matrices, 2
//     threads, weights from memory: 32 rows 146 -> 172 GFLOP/s, 64 rows 153 -> 200 (from L2: 191 -> 258,
//     163 -> 242); 8 and 16 rows gain nothing streamed, so 8-15 keep R = 3.
template <int R, int MB, class W>
inline void gemv_nk_blocks(const float* x, int64_t x_stride, int64_t M, const W* w, int64_t K, int64_t n0,
                           int64_t n1, float* out, int64_t out_stride, const float* scale, const float* bias,
                           bool acc) {
  auto put = [&](int64_t m, int64_t n, float dot) {
    float v = scale ? dot * scale[n] : dot;
    if (bias) v += bias[n];
    float* o = out + m * out_stride + n;
    *o = acc ? *o + v : v;
  };
  constexpr bool narrow = !std::is_same_v<W, float>;
  const bool prefetch = narrow || M >= 4;
  // bf16 / int8 weights against many rows: widen each block of weight rows once into float32 scratch
  // (exact: both widen without rounding) instead of once per block of x rows.
  const bool widen_once = narrow && M >= 8;
  std::vector<float> scratch(widen_once ? R * K : 0);
  float dots[MB * R];
  // The next block (four ahead for bf16 / int8 up to 3 rows), prefetched in equal shares by every pass over
  // this block. All in the first pass, those prefetches stalled it (a burst of misses) while the later
  // passes, from L1, left memory idle.
  const int64_t passes = (M + MB - 1) / MB, row = K * static_cast<int64_t>(sizeof(W)), lines = (row + 63) / 64;
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    if (widen_once) widen_rows(w + n * K, R * K, scratch.data());
    const char* next = reinterpret_cast<const char*>(w + (n + (narrow && M < 4 ? 4 * R : R)) * K);
    for (int64_t m0 = 0, p = 0; m0 < M; m0 += MB, ++p) {
      const int64_t mb = M - m0 < MB ? M - m0 : MB;
      const float* xm = x + m0 * x_stride;
      const int64_t l0 = lines * p / passes, l1 = lines * (p + 1) / passes;
      if (widen_once)
        dot_block_rows<MB, R, true>(mb, xm, x_stride, scratch.data(), K, dots, next, row, l0, l1 - l0);
      else if (prefetch)
        dot_block_rows<MB, R, true>(mb, xm, x_stride, w + n * K, K, dots, next, row, l0, l1 - l0);
      else
        dot_block_rows<MB, R, false>(mb, xm, x_stride, w + n * K, K, dots);
      for (int64_t m = 0; m < mb; ++m)
        for (int j = 0; j < R; ++j) put(m0 + m, n + j, dots[m * R + j]);
    }
  }
  for (; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) put(m, n, dot_row(x + m * x_stride, w + n * K, K));
}

template <class W>
inline void gemv_nk(const float* x, int64_t x_stride, int64_t M, const W* w, int64_t K, int64_t n0, int64_t n1,
                    float* out, int64_t out_stride, const float* scale, const float* bias, bool acc) {
  if (M >= 16)
    gemv_nk_blocks<6, 4>(x, x_stride, M, w, K, n0, n1, out, out_stride, scale, bias, acc);
  else if (M >= 8)
    gemv_nk_blocks<3, 8>(x, x_stride, M, w, K, n0, n1, out, out_stride, scale, bias, acc);
  else
    gemv_nk_blocks<4, 4>(x, x_stride, M, w, K, n0, n1, out, out_stride, scale, bias, acc);
}

// Rows of x times columns [n0, n1) of a float32 "kn" weight [K, N]. Reading a narrow panel of columns
// down all K rows jumps N floats between short reads, which the prefetchers follow badly (24 GB/s at
// batch 1, 10 at batch 8); instead each tile of columns is walked row after row, four weight rows per
// pass, each read as one contiguous segment, the sums for up to kKnRows rows of x kept in an L1 tile
// (32 KB in all, so the tile narrows as the rows grow: 8192 columns at batch 1, 512 at 16). Measured on
// GPT-2-small's matrices, 2 threads: 33 GB/s at batch 1, 19 at batch 8.
constexpr int64_t kKnTile = 8192;  // floats of partial sums per tile
constexpr int64_t kKnRows = 16;    // rows of x per pass over the weights

inline void gemv_kn_rows(const float* x, int64_t x_stride, int64_t M, const float* w, int64_t K, int64_t N,
                         int64_t n0, int64_t n1, float* out, int64_t out_stride, const float* bias, bool acc) {
  alignas(64) float sums[kKnTile];
  const int64_t tile = kKnTile / M / 16 * 16;
  for (int64_t c0 = n0; c0 < n1; c0 += tile) {
    const int64_t width = n1 - c0 < tile ? n1 - c0 : tile;
    std::memset(sums, 0, sizeof(float) * M * tile);
    auto rows = [&](int64_t k, int64_t nk) {  // sums += x[:, k .. k+nk) . w[k .. k+nk, tile], nk <= 4
      const float* wk = w + k * N + c0;
      int64_t c = 0;
#if PYENGINE_GEMV_AVX512
      if (nk == 4)
        for (; c + 16 <= width; c += 16) {
          const __m512 v0 = _mm512_loadu_ps(wk + c), v1 = _mm512_loadu_ps(wk + N + c);
          const __m512 v2 = _mm512_loadu_ps(wk + 2 * N + c), v3 = _mm512_loadu_ps(wk + 3 * N + c);
          for (int64_t m = 0; m < M; ++m) {
            const float* xm = x + m * x_stride + k;
            float* sm = sums + m * tile + c;
            __m512 a = _mm512_load_ps(sm);
            a = _mm512_fmadd_ps(_mm512_set1_ps(xm[0]), v0, a);
            a = _mm512_fmadd_ps(_mm512_set1_ps(xm[1]), v1, a);
            a = _mm512_fmadd_ps(_mm512_set1_ps(xm[2]), v2, a);
            a = _mm512_fmadd_ps(_mm512_set1_ps(xm[3]), v3, a);
            _mm512_store_ps(sm, a);
          }
        }
#endif
      for (; c < width; ++c)
        for (int64_t m = 0; m < M; ++m) {
          float a = sums[m * tile + c];
          for (int64_t r = 0; r < nk; ++r) a += x[m * x_stride + k + r] * wk[r * N + c];
          sums[m * tile + c] = a;
        }
    };
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) rows(k, 4);
    if (k < K) rows(k, K - k);
    for (int64_t m = 0; m < M; ++m) {
      float* o = out + m * out_stride + c0;
      for (int64_t c = 0; c < width; ++c) {
        float v = sums[m * tile + c];
        if (bias) v += bias[c0 + c];
        o[c] = acc ? o[c] + v : v;
      }
    }
  }
}

inline void gemv_kn(const float* x, int64_t x_stride, int64_t M, const float* w, int64_t K, int64_t N, int64_t n0,
                    int64_t n1, float* out, int64_t out_stride, const float* bias, bool acc) {
  for (int64_t m = 0; m < M; m += kKnRows)
    gemv_kn_rows(x + m * x_stride, x_stride, M - m < kKnRows ? M - m : kKnRows, w, K, N, n0, n1,
                 out + m * out_stride, out_stride, bias, acc);
}

}  // namespace pyengine
