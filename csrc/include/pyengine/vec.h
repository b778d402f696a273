// Small vector helpers shared by the CPU kernels: AVX-512 when the compiler targets it, scalar otherwise.
//
// Header-only, no torch: the kernels in this folder see raw pointers and lengths. Every helper has a
// scalar path with the same results (up to the last bits of exp), so a build without AVX-512 is correct.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__)
// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 intrinsics; not our code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define PYENGINE_AVX512 1
#else
#define PYENGINE_AVX512 0
#endif

// Inner kernels keep their accumulators in registers only once inlined into their caller. GCC
// weighs inlining per translation unit, and since several units include the kernel headers (linear_into
// and decode_layer), it once kept an out-of-line dot_block4x4 whose 16 accumulators lived in memory: the
// 32-row product fell from ~150 to ~105 GFLOP/s. Forced inline, whichever unit's copy the linker keeps.
#define PYENGINE_KERNEL inline __attribute__((always_inline))

namespace pyengine {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Largest value of x[0, n), ignoring NaN; -inf for an empty or all -inf/NaN row.
inline float row_max(const float* x, int64_t n) {
  int64_t i = 0;
  float best = kNegInf;
#if PYENGINE_AVX512
  __m512 acc = _mm512_set1_ps(kNegInf);
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(_mm512_loadu_ps(x + i), acc);  // NaN in x loses
  best = _mm512_reduce_max_ps(acc);
#endif
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

#if PYENGINE_AVX512
// exp(a) for a <= 0 in double lanes, relative error ~1e-11. Arguments below -708 (and -inf, NaN) give
// exactly 0: they are masked to 0 instead of computed, because a vscalefpd whose result underflows takes a
// microcode assist (~100 cycles a lane on Intel cores; 3x the whole top-p pass over a top-k-masked row).
// Double precision because the probabilities feed a CDF compared against a 53-bit uniform: a float exp of
// an argument near -20 would be off by ~1e-6 relative, visible as a different token at CDF near-ties.
inline __m512d exp_neg_pd(__m512d a) {
  const __mmask8 live = _mm512_cmp_pd_mask(a, _mm512_set1_pd(-708.0), _CMP_GE_OQ);
  a = _mm512_max_pd(a, _mm512_set1_pd(-708.0));
  const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(a, _mm512_set1_pd(1.4426950408889634)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), a);  // Cody-Waite hi
  r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);          // and lo
  // Taylor to degree 10 on |r| <= ln2/2: truncation error < 1e-12.
  __m512d p = _mm512_set1_pd(1.0 / 3628800.0);
  const double c[] = {1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
                      1.0 / 24.0,     1.0 / 6.0,     0.5,           1.0,          1.0};
  for (double ci : c) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(ci));
  return _mm512_maskz_scalef_pd(live, p, n);  // p * 2^n, a normal number in every live lane
}

// exp(a) in float lanes for a <= 0 (softmax sums, attention weights, sigmoids), relative error ~2e-7.
// Below -87 (and -inf, NaN) the result is exactly 0, masked rather than computed: an underflowing
// vscalefps takes a microcode assist (see exp_neg_pd).
inline __m512 exp_neg_ps(__m512 a) {
  const __mmask16 live = _mm512_cmp_ps_mask(a, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  a = _mm512_max_ps(a, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), a);  // Cody-Waite: ln 2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-06f), r);
  // Taylor to degree 7 on |r| <= ln2/2: truncation error < 6e-9.
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  const float c[] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
  for (float ci : c) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ci));
  return _mm512_maskz_scalef_ps(live, p, n);
}

// Lanes i < n of 16 floats at p (the rest read as 0).
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// The sums of 16 vectors as one vector (lane i = sum of v[i]): a transpose-and-add tree, 45 shuffles and
// adds where 16 separate horizontal sums take ~130 that compete with the FMAs for the same ports.
PYENGINE_KERNEL __m512 reduce16(const __m512* v) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i)  // lane [a0+a2, b0+b2, a1+a3, b1+b3] of each 128-bit quarter
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // each quarter: the four vectors' sums over that quarter
    const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 v01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44), _mm512_shuffle_f32x4(u[0], u[1], 0xEE));
  const __m512 v23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44), _mm512_shuffle_f32x4(u[2], u[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, 0x88), _mm512_shuffle_f32x4(v01, v23, 0xDD));
}
#endif

// e[i] = exp((x[i] - m) * inv_t) in double, returns the sum. x - m <= 0 for every finite x when m is the max.
inline double exp_store(const float* x, int64_t n, double m, double inv_t, double* e) {
  int64_t i = 0;
  double sum = 0.0;
#if PYENGINE_AVX512
  const __m512d vm = _mm512_set1_pd(m), vt = _mm512_set1_pd(inv_t);
  __m512d acc = _mm512_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m512d xd = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    const __m512d v = exp_neg_pd(_mm512_mul_pd(_mm512_sub_pd(xd, vm), vt));
    _mm512_storeu_pd(e + i, v);
    acc = _mm512_add_pd(acc, v);
  }
  sum = _mm512_reduce_add_pd(acc);
#endif
  for (; i < n; ++i) {
    e[i] = std::exp((static_cast<double>(x[i]) - m) * inv_t);
    sum += e[i];
  }
  return sum;
}

// Appends the values x[i] > thr to buf (keeping index order) and returns the new size.
inline int64_t append_greater(const float* x, int64_t n, float thr, float* buf, int64_t size) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > thr) buf[size++] = x[i];
  return size;
}

}  // namespace pyengine
