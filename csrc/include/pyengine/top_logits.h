// The top logits of a row, exactly, for a fraction of the LM head's weight stream.
//
// Header-only, no torch. Greedy decoding needs each row's largest logit, and top-k sampling its k largest
// (every token below them is -inf after the top-k warper), yet a decode step reads the whole [V, K] head
// to produce them: 21-31% of a small model's weights. A screen reads an int8 copy of the head instead
// (q with a float32 scale per row, a quarter of the bytes) and keeps only the rows it cannot rule out:
//
//   approx[n] = scale[n] * (x . q[n])                          the int8 product (gemv_nk on the copy)
//   |logit[n] - approx[n]| <= ||x|| * slack[n]                 for the float32 logit our kernel computes,
//   slack[n] = ||w[n] - scale[n] q[n]|| + gamma * (||w[n]|| + scale[n] ||q[n]||), gamma = (K+2) u / (1 - (K+2) u)
//
// (Cauchy-Schwarz on the quantization residual, plus the rounding of both float32 dot products, u = 2^-24;
// the slack is computed once in float64 with a margin: pyengine/backends/torch/decode.py, screen_weights.)
// With lb = approx - e and ub = approx + e, theta = the k-th largest lb is at most the k-th largest logit,
// so every token whose logit reaches the k-th largest (ties included) has ub >= theta: those candidates
// are recomputed from the float32 (or bf16) head with dot_row, the same arithmetic as gemv_nk's one-row
// product, and every other entry of the row is -inf. The screen never guesses: a row whose bound keeps too
// many candidates, or whose x is not finite, is computed in full.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "pyengine/gemv.h"

namespace pyengine {

// The screen of one head row `w` [K]: q (int8, |q| <= 127, round half to even of w / scale), scale
// (max |w| / 127, at least FLT_MIN) and the slack above, in float64 with a 1e-6 margin, rounded up to
// float32. A row holding inf or NaN gets a non-finite slack (the caller then never screens). Squares
// are summed in float64 vectors: every product of two floats is exact there, so only the float64 sums
// round (relative 1e-13 at these lengths, far inside the margin).
template <class W>
inline void screen_row(const W* w, int64_t K, int8_t* q, float* scale, float* slack) {
  float amax = 0.f;
  int64_t j = 0;
#if PYENGINE_GEMV_AVX512
  __m512 vmax = _mm512_setzero_ps();
  for (; j + 16 <= K; j += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(load16(w + j)));
  amax = _mm512_reduce_max_ps(vmax);
#endif
  for (; j < K; ++j) amax = std::max(amax, std::fabs(widen(w[j])));
  const float s = std::max(amax / 127.0f, std::numeric_limits<float>::min());
  double rr = 0.0, ww = 0.0, qq = 0.0;
  j = 0;
#if PYENGINE_GEMV_AVX512
  const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  __m512d r2 = _mm512_setzero_pd(), w2 = r2, q2 = r2;
  auto add_squares = [&](__m256 v, __m256 qf) __attribute__((always_inline)) {
    const __m512d vd = _mm512_cvtps_pd(v), back = _mm512_mul_pd(_mm512_set1_pd(s), _mm512_cvtps_pd(qf));
    const __m512d r = _mm512_sub_pd(vd, back);
    r2 = _mm512_fmadd_pd(r, r, r2);
    w2 = _mm512_fmadd_pd(vd, vd, w2);
    q2 = _mm512_fmadd_pd(back, back, q2);
  };
  for (; j + 16 <= K; j += 16) {
    const __m512 v = load16(w + j);
    __m512 qf = _mm512_roundscale_ps(_mm512_div_ps(v, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    qf = _mm512_min_ps(hi, _mm512_max_ps(lo, qf));  // a NaN lane stays NaN: its row's slack is NaN too
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(qf)));
    add_squares(_mm512_castps512_ps256(v), _mm512_castps512_ps256(qf));
    add_squares(_mm512_extractf32x8_ps(v, 1), _mm512_extractf32x8_ps(qf, 1));
  }
  rr = _mm512_reduce_add_pd(r2);
  ww = _mm512_reduce_add_pd(w2);
  qq = _mm512_reduce_add_pd(q2);
#endif
  for (; j < K; ++j) {
    const float v = widen(w[j]);
    const float r = std::nearbyint(v / s);
    const float qj = std::isnan(r) ? -127.f : std::min(127.f, std::max(-127.f, r));
    q[j] = static_cast<int8_t>(qj);
    const double back = static_cast<double>(s) * qj;  // exact in float64
    rr += (v - back) * (v - back);
    ww += static_cast<double>(v) * v;
    qq += back * back;
  }
  const double u = std::ldexp(1.0, -24), gamma = (K + 2) * u / (1 - (K + 2) * u);
  const double bound = (std::sqrt(rr) + gamma * (std::sqrt(ww) + std::sqrt(qq))) * (1 + 1e-6);
  float up = static_cast<float>(bound);
  if (static_cast<double>(up) < bound) up = std::nextafter(up, std::numeric_limits<float>::infinity());
  *scale = s;
  *slack = up;
}

// Per-thread scratch of top_logits_row.
struct TopLogitsScratch {
  std::vector<double> heap;         // the k largest lower bounds so far (a min-heap)
  std::vector<int64_t> candidates;  // columns kept by the screen
};

// One row: `out` [N] holds approx (the int8 product) on entry and, on return, the float32 logits of the
// candidates (x . w[n] with dot_row) and -inf elsewhere. Returns the number of candidates (N: computed in
// full). `w` is the exact head [N, K] (float32, or bfloat16 bits).
template <class W>
inline int64_t top_logits_row(const float* x, const W* w, const float* slack, int64_t N, int64_t K, int64_t k,
                              float* out, TopLogitsScratch& scratch) {
  double sq = 0.0;
  for (int64_t j = 0; j < K; ++j) sq += static_cast<double>(x[j]) * x[j];
  const double norm = std::sqrt(sq);
  // Underflow in either product (flushed or subnormal partial sums) is below this per entry.
  constexpr double kTiny = 1e-30;
  auto full = [&] {
    for (int64_t n = 0; n < N; ++n) out[n] = dot_row(x, w + n * K, K);
    return N;
  };
  if (!std::isfinite(norm) || k >= N) return full();
  std::vector<double>& heap = scratch.heap;
  heap.clear();
  for (int64_t n = 0; n < N; ++n) {
    const double lb = static_cast<double>(out[n]) - (norm * slack[n] + kTiny);
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back(lb);
      std::push_heap(heap.begin(), heap.end(), std::greater<double>());
    } else if (lb > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<double>());
      heap.back() = lb;
      std::push_heap(heap.begin(), heap.end(), std::greater<double>());
    }
  }
  const double theta = heap.front();  // the k-th largest lower bound
  std::vector<int64_t>& cand = scratch.candidates;
  cand.clear();
  for (int64_t n = 0; n < N; ++n)
    if (static_cast<double>(out[n]) + (norm * slack[n] + kTiny) >= theta) cand.push_back(n);
  // Past a quarter of the row the screen saves nothing over the full product.
  if (static_cast<int64_t>(cand.size()) * 4 > N) return full();
  std::fill(out, out + N, -std::numeric_limits<float>::infinity());
  for (int64_t n : cand) out[n] = dot_row(x, w + n * K, K);
  return static_cast<int64_t>(cand.size());
}

}  // namespace pyengine
