// Selection without sorting the vocabulary: top-k threshold, top-p cut, min-p threshold, argmax
// (spec: pyengine/ops/sampling.py).
//
// Memory traffic per row of V float32 scores: top-k is one streaming read (the running threshold rejects
// almost every 16-lane vector with one compare); top-p is one exp pass plus a value bisection whose
// passes touch only the candidates left after each halving (a few row-equivalents in total); min-p is
// one threshold pass. Only a handful of survivors (<= 16, or one tie group) are ever sorted.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "pyengine/vec.h"

namespace pyengine {

// NOTE: compressed stores are done as compress-into-register + full-width store: the memory form
// (vcompressps/vpcompressd m, k) is microcoded on AMD Zen 4 and ran ~20x slower here. The full-width store
// writes up to 16 lanes past the compacted end, so every output buffer carries 16 entries of slack; in
// place it never reaches unread input (the write index trails the read index).

// k-th largest value of x[0, n) counting duplicates (1 <= k <= n); -inf when fewer than k values exceed
// -inf. Values above the running threshold are appended to buf; when 2k are buffered, nth_element keeps
// the best k and raises the threshold, so the work stays O(n) even for an ascending row.
// buf needs n + 16 floats.
inline float kth_largest(const float* x, int64_t n, int64_t k, float* buf) {
  const int64_t cap = std::min<int64_t>(2 * k, n);
  float thr = kNegInf;
  int64_t size = 0;
  auto shrink = [&] {
    std::nth_element(buf, buf + k - 1, buf + size, std::greater<float>());
    thr = buf[k - 1];
    size = k;
  };
  int64_t i = 0;
#if PYENGINE_AVX512
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_set1_ps(thr), _CMP_GT_OQ);
    if (!m) continue;
    _mm512_storeu_ps(buf + size, _mm512_maskz_compress_ps(m, v));  // see store_compressed note
    size += __builtin_popcount(m);
    if (size >= cap && size > k) shrink();
  }
#endif
  for (; i < n; ++i) {
    if (!(x[i] > thr)) continue;
    buf[size++] = x[i];
    if (size >= cap && size > k) shrink();
  }
  if (size < k) return kNegInf;
  std::nth_element(buf, buf + k - 1, buf + size, std::greater<float>());
  return buf[k - 1];
}

// Copies the values >= thr and their indices, in index order; returns how many (v, idx: n + 16 entries).
inline int64_t gather_at_least(const float* x, int64_t n, float thr, float* v, int32_t* idx) {
  int64_t size = 0, i = 0;
#if PYENGINE_AVX512
  __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= n; i += 16, iota = _mm512_add_epi32(iota, _mm512_set1_epi32(16))) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    const __mmask16 m = _mm512_cmp_ps_mask(xv, _mm512_set1_ps(thr), _CMP_GE_OQ);
    if (!m) continue;
    _mm512_storeu_ps(v + size, _mm512_maskz_compress_ps(m, xv));
    _mm512_storeu_si512(idx + size, _mm512_maskz_compress_epi32(m, iota));
    size += __builtin_popcount(m);
  }
#endif
  for (; i < n; ++i) {
    v[size] = x[i];
    idx[size] = static_cast<int32_t>(i);
    size += x[i] >= thr;
  }
  return size;
}

// Removal predicate of a stable ascending order: (x, i) is removed iff it sorts before (v, i_cut).
struct Cut {
  float v = kNegInf;
  int64_t i = 0;
  bool removes(float x, int64_t idx) const { return x < v || (x == v && idx < i); }
};

// Candidate arrays (values, masses, indices) a top-p search compacts into; each needs n + 16 entries.
struct Candidates {
  float* v;
  double* e;
  int32_t* idx;
};

inline double mass_below(const float* v, const double* e, int64_t n, float t, int64_t* count) {
  double mass = 0.0;
  int64_t cnt = 0, i = 0;
#if PYENGINE_AVX512 && defined(__AVX512VL__)
  __m512d acc = _mm512_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __mmask8 m = _mm256_cmp_ps_mask(_mm256_loadu_ps(v + i), _mm256_set1_ps(t), _CMP_LT_OQ);
    acc = _mm512_mask_add_pd(acc, m, acc, _mm512_loadu_pd(e + i));
    cnt += __builtin_popcount(m);
  }
  mass = _mm512_reduce_add_pd(acc);
#endif
  for (; i < n; ++i) {
    const bool below = v[i] < t;
    mass += below ? e[i] : 0.0;
    cnt += below;
  }
  *count = cnt;
  return mass;
}

inline double mass_at_most(const double* e, int64_t n, double thr, int64_t* count) {
  double mass = 0.0;
  int64_t cnt = 0, i = 0;
#if PYENGINE_AVX512
  __m512d acc = _mm512_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m512d ev = _mm512_loadu_pd(e + i);
    const __mmask8 m = _mm512_cmp_pd_mask(ev, _mm512_set1_pd(thr), _CMP_LE_OQ);
    acc = _mm512_mask_add_pd(acc, m, acc, ev);
    cnt += __builtin_popcount(m);
  }
  mass = _mm512_reduce_add_pd(acc);
#endif
  for (; i < n; ++i) {
    const bool low = e[i] <= thr;
    mass += low ? e[i] : 0.0;
    cnt += low;
  }
  *count = cnt;
  return mass;
}

struct Range {
  float lo = -kNegInf, hi = kNegInf;  // over finite values
  bool has_neg_inf = false;
  void add(float x) {
    if (x > kNegInf) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    } else if (x == kNegInf) {
      has_neg_inf = true;
    }
  }
};

#if PYENGINE_AVX512 && defined(__AVX512VL__)
// Range of the lanes in `keep` (8 floats): finite min/max, and whether any is -inf.
inline void range_lanes(__m256 x, __mmask8 keep, __m256* lo, __m256* hi, __mmask8* neg_inf) {
  const __mmask8 finite = _mm256_mask_cmp_ps_mask(keep, x, _mm256_set1_ps(kNegInf), _CMP_GT_OQ);
  *lo = _mm256_mask_min_ps(*lo, finite, *lo, x);
  *hi = _mm256_mask_max_ps(*hi, finite, *hi, x);
  *neg_inf |= keep & _mm256_cmp_ps_mask(x, _mm256_set1_ps(kNegInf), _CMP_EQ_OQ);
}

inline void range_reduce(__m256 lo, __m256 hi, __mmask8 neg_inf, Range* r) {
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  for (int j = 0; j < 8; ++j) {
    r->lo = std::min(r->lo, l[j]);
    r->hi = std::max(r->hi, h[j]);
  }
  r->has_neg_inf = r->has_neg_inf || neg_inf;
}
#endif

inline Range range_of(const float* v, int64_t n) {
  Range r;
  int64_t i = 0;
#if PYENGINE_AVX512 && defined(__AVX512VL__)
  __m256 lo = _mm256_set1_ps(-kNegInf), hi = _mm256_set1_ps(kNegInf);
  __mmask8 neg_inf = 0;
  for (; i + 8 <= n; i += 8) range_lanes(_mm256_loadu_ps(v + i), 0xFF, &lo, &hi, &neg_inf);
  range_reduce(lo, hi, neg_inf, &r);
#endif
  for (; i < n; ++i) r.add(v[i]);
  return r;
}

// Keeps the side of the split at t ([t, inf) when `upper`), writing into c (in place is fine: the write
// index never passes the read index). idx == nullptr means the identity. Vector compress-stores: the
// side of a token is data-dependent, so a branchy loop would mispredict about half the time.
// With `by_mass`, the split is on the mass instead: keep e > mass_thr (a value down-set too, e being
// monotone in the value).
inline int64_t compact(const float* v, const double* e, const int32_t* idx, int64_t n, float t, bool upper,
                       Candidates c, Range* range, bool by_mass = false, double mass_thr = 0.0) {
  int64_t w = 0, i = 0;
  Range r;
#if PYENGINE_AVX512 && defined(__AVX512VL__)
  __m256 lo = _mm256_set1_ps(-kNegInf), hi = _mm256_set1_ps(kNegInf);
  __mmask8 neg_inf = 0;
  __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 8 <= n; i += 8, iota = _mm256_add_epi32(iota, _mm256_set1_epi32(8))) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m512d ev = _mm512_loadu_pd(e + i);  // loaded before the stores: in place, c.e + w may alias e + i
    __mmask8 keep = by_mass ? _mm512_cmp_pd_mask(ev, _mm512_set1_pd(mass_thr), _CMP_GT_OQ)
                            : _mm256_cmp_ps_mask(x, _mm256_set1_ps(t), _CMP_GE_OQ);
    if (!upper) keep = static_cast<__mmask8>(~keep);
    if (!keep) continue;
    const __m256i ids = idx ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i)) : iota;
    _mm256_storeu_ps(c.v + w, _mm256_maskz_compress_ps(keep, x));
    _mm512_storeu_pd(c.e + w, _mm512_maskz_compress_pd(keep, ev));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c.idx + w), _mm256_maskz_compress_epi32(keep, ids));
    range_lanes(x, keep, &lo, &hi, &neg_inf);
    w += __builtin_popcount(keep);
  }
  range_reduce(lo, hi, neg_inf, &r);
#endif
  for (; i < n; ++i) {
    if ((by_mass ? e[i] > mass_thr : v[i] >= t) != upper) continue;
    c.v[w] = v[i];
    c.e[w] = e[i];
    c.idx[w] = idx ? idx[i] : static_cast<int32_t>(i);
    r.add(v[i]);
    ++w;
  }
  *range = r;
  return w;
}

// A pivot strictly inside the candidates' value range, or false when they are one tie group.
inline bool pick_pivot(const Range& r, float* t) {
  if (r.lo < r.hi) {
    float mid = r.lo + (r.hi - r.lo) * 0.5f;
    if (std::isinf(mid)) mid = r.lo * 0.5f + r.hi * 0.5f;  // the difference overflowed
    *t = mid > r.lo ? mid : r.hi;
    return true;
  }
  if (r.has_neg_inf && r.lo == r.hi) {  // split the -inf tokens from the finite ones
    *t = r.lo;
    return true;
  }
  return false;
}

// The longest prefix of the stable ascending order (value, then index) with mass sum(e) <= budget, as
// transformers' `cumsum(sorted probs) <= 1 - top_p` removes it. Found by bisection on the value: each
// round sums the mass below a pivot and keeps one side, so tokens on the other side are settled without
// ever being ordered. Returns the cut; *removed receives the prefix length.
inline Cut top_p_cut(const float* v, const double* e, const int32_t* idx, int64_t n, double budget, Candidates c,
                     int64_t* removed) {
  double below = 0.0;
  int64_t below_count = 0;
  Range range;
  if (n > 16) {
    // First split on the mass: tokens with e <= budget / n cannot together exceed the budget, so they are
    // all in the removed prefix. For peaked (LM-like) rows this one pass settles nearly the whole tail.
    const double thr = budget / static_cast<double>(n);
    below = mass_at_most(e, n, thr, &below_count);
    n = compact(v, e, idx, n, 0.0f, true, c, &range, true, thr);
    v = c.v, e = c.e, idx = c.idx;
  } else {
    range = range_of(v, n);
  }
  float t;
  while (n > 16 && pick_pivot(range, &t)) {
    int64_t cnt;
    const double mass = mass_below(v, e, n, t, &cnt);
    const bool upper = below + mass <= budget;  // everything below t fits in the removed prefix
    if (upper) {
      below += mass;
      below_count += cnt;
    }
    n = compact(v, e, idx, n, t, upper, c, &range);
    v = c.v, e = c.e, idx = c.idx;
  }
  // Few candidates, or one tie group (already in index order): walk them in (value, index) order.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  auto id = [&](int64_t j) { return idx ? static_cast<int64_t>(idx[j]) : j; };
  if (n <= 16)
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return v[a] < v[b] || (v[a] == v[b] && id(a) < id(b));
    });
  Cut cut;
  if (n == 0) cut = Cut{-kNegInf, INT64_MAX};  // the mass split took every token (p = 0 on a flat row)
  if (n > 0 && below_count > 0) cut = Cut{v[order[0]], 0};  // everything below the candidates goes
  int64_t walked = 0;
  for (int64_t j : order) {
    if (!(below + e[j] <= budget)) break;
    below += e[j];
    cut = Cut{v[j], id(j) + 1};
    ++walked;
  }
  *removed = below_count + walked;
  return cut;
}

// Smallest float f with (double)f >= d: then `x < f` equals `(double)x < d` for every float x.
inline float float_at_least(double d) {
  float f = static_cast<float>(d);
  if (static_cast<double>(f) < d) f = std::nextafter(f, -kNegInf);
  return f;
}

// First index of the largest value; a NaN counts as the largest (torch.argmax, np.argmax).
inline bool any_nan(const float* x, int64_t n) {
  int64_t i = 0;
#if PYENGINE_AVX512
  __mmask16 nan = 0;
  for (; i + 16 <= n; i += 16) nan |= _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_loadu_ps(x + i), _CMP_UNORD_Q);
  if (nan) return true;
#endif
  for (; i < n; ++i)
    if (x[i] != x[i]) return true;
  return false;
}

// First index of the largest value; a NaN counts as the largest (torch.argmax, np.argmax). Vector passes
// only: an early-exit scalar scan would not vectorise.
inline int64_t argmax_row(const float* x, int64_t n) {
  if (any_nan(x, n)) {
    for (int64_t i = 0; i < n; ++i)
      if (x[i] != x[i]) return i;
  }
  const float m = row_max(x, n);
  int64_t i = 0;
#if PYENGINE_AVX512
  for (; i + 16 <= n; i += 16) {
    const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_set1_ps(m), _CMP_EQ_OQ);
    if (hit) return i + __builtin_ctz(hit);
  }
#endif
  for (; i < n; ++i)
    if (x[i] == m) return i;
  return 0;
}

// Marks in keep[] the `count` best tokens by value, ties broken towards the lower index
// (`low_first`) or the higher one; used by the rare min_tokens_to_keep fix-ups.
template <class Keep>
inline void keep_best(const float* x, int64_t n, int64_t count, bool low_first, float* buf, Keep keep) {
  const float w = kth_largest(x, n, count, buf);
  int64_t need = count;
  for (int64_t i = 0; i < n; ++i) need -= x[i] > w;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = low_first ? j : n - 1 - j;
    if (x[i] > w || (x[i] == w && need-- > 0)) keep(i);
  }
}

}  // namespace pyengine
