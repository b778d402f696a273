// Per-token pieces of a decode step besides the matrix products: norms, RoPE, attention of one new query.
//
// Header-only, no torch; raw pointers with explicit strides. Everything accumulates in float32 (the models
// run the decode path in float32 activations whatever the weight type).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pyengine/vec.h"

namespace pyengine {

// a . b over n floats (AVX-512 for whole 16-lane chunks).
inline float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  s = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y += p * x over n floats.
inline void axpy_f32(float p, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vp = _mm512_set1_ps(p);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vp, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += p * x[i];
}

// out = w * (x / sqrt(mean(x^2) + eps)), transformers' LlamaRMSNorm order of operations.
inline void rms_norm_row(const float* x, const float* w, int64_t n, float eps, float* out) {
  const float ss = dot_f32(x, x, n);
  const float r = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
}

// out = (x - mean) / sqrt(var + eps) * w + b with the biased variance (torch.nn.LayerNorm).
inline void layer_norm_row(const float* x, const float* w, const float* b, int64_t n, float eps, float* out) {
  float mean = 0.f;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  float var = 0.f;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float r = 1.f / std::sqrt(var / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - mean) * r * w[i] + (b ? b[i] : 0.f);
}

// gate[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up, as F.silu then mul_. The vector path
// takes exp of -|gate| only (no overflow) and forms the sigmoid from it.
inline void silu_mul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
#if PYENGINE_AVX512
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 t = exp_neg_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));  // exp(-|g|)
    const __mmask16 neg = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 num = _mm512_mask_blend_ps(neg, one, t);  // sigmoid(g) = (g < 0 ? t : 1) / (1 + t)
    const __m512 sig = _mm512_div_ps(num, _mm512_add_ps(one, t));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_mul_ps(g, sig), _mm512_loadu_ps(up + i)));
  }
#endif
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// x[i] = gelu_tanh(x[i]) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), GPT-2's "gelu_new" (torch's
// gelu(approximate="tanh")), in place. The vector path forms tanh(u) = sign(u) (1 - e) / (1 + e) from
// e = exp(-2 |u|) (no overflow).
inline void gelu_tanh(float* x, int64_t n) {
  constexpr float kA = 0.7978845608028654f, kB = 0.044715f;
  int64_t i = 0;
#if PYENGINE_AVX512
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f), a = _mm512_set1_ps(kA),
               b = _mm512_set1_ps(kB), minus_two = _mm512_set1_ps(-2.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 u = _mm512_mul_ps(a, _mm512_fmadd_ps(_mm512_mul_ps(b, v), _mm512_mul_ps(v, v), v));
    const __m512 e = exp_neg_ps(_mm512_mul_ps(minus_two, _mm512_abs_ps(u)));  // exp(-2|u|)
    __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));  // tanh(|u|)
    t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps(), t);
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, t)));
  }
#endif
  for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::tanh(kA * (x[i] + kB * x[i] * x[i] * x[i])));
}

// LLaMA's rotate-half RoPE of one head: out = x * cos + rotate_half(x) * sin (cos/sin rows of width D).
inline void rope_head(const float* x, const float* cos, const float* sin, int64_t D, float* out) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] - x[i + half] * sin[i];
  for (int64_t i = half; i < D; ++i) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

// Attention of one query head `q` [D] over the T slots of a [T, D] key/value cache, only the slots where
// `visible[t]` is non-zero (the others are never read). No visible slot: the mean of every value row (what a
// softmax over all-equal masked scores gives). `scores` is scratch of T floats.
inline void attend_visible(const float* q, const float* keys, const float* values, const uint8_t* visible,
                           int64_t T, int64_t D, float scale, float* scores, float* out) {
  float best = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int64_t t = 0; t < T; ++t) {
    if (!visible[t]) continue;
    scores[t] = dot_f32(q, keys + t * D, D) * scale;
    best = scores[t] > best ? scores[t] : best;
    any = true;
  }
  for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
  float total = 0.f;
  for (int64_t t = 0; t < T; ++t) {
    if (any && !visible[t]) continue;
    const float p = any ? std::exp(scores[t] - best) : 1.f;
    total += p;
    axpy_f32(p, values + t * D, out, D);
  }
  const float inv = 1.f / total;
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

}  // namespace pyengine
