// Row kernels of the standalone warpers top_k_mask, top_p_mask, min_p_mask (spec: pyengine/ops/sampling.py).
//
// Each writes `out` = x with the removed tokens set to `fv`. Scratch: `buf` n + 16 floats; top-p also
// needs `e` (n doubles) and candidate arrays `c` (n entries each).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyengine/sampling.h"

namespace pyengine {

inline void top_k_mask_row(const float* x, float* out, int64_t n, int64_t k, float fv, float* buf) {
  const float kth = kth_largest(x, n, k, buf);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < kth ? fv : x[i];
}

// Keeps the tokens `keep_best` marks, whatever the threshold removed (min_tokens_to_keep).
inline void restore_best(const float* x, float* out, int64_t n, int64_t count, bool low_first, float* buf) {
  keep_best(x, n, std::min(count, n), low_first, buf, [&](int64_t i) { out[i] = x[i]; });
}

inline void top_p_mask_row(const float* x, float* out, int64_t n, double top_p, float fv, int64_t min_keep,
                           float* buf, double* e, Candidates c) {
  const float m = row_max(x, n);
  if (!(m > kNegInf)) {  // all -inf: the reference's probabilities are NaN and nothing is removed
    std::memcpy(out, x, n * sizeof(float));
    return;
  }
  const double total = exp_store(x, n, m, 1.0, e);
  int64_t removed;
  const Cut cut = top_p_cut(x, e, nullptr, n, (1.0 - top_p) * total, c, &removed);
  for (int64_t i = 0; i < n; ++i) out[i] = cut.removes(x[i], i) ? fv : x[i];
  if (n - removed < min_keep) restore_best(x, out, n, min_keep, false, buf);  // stable ascending: last ones stay
}

inline void min_p_mask_row(const float* x, float* out, int64_t n, double min_p, float fv, int64_t min_keep,
                           float* buf) {
  const float m = row_max(x, n);
  if (!(m > kNegInf)) {
    std::memcpy(out, x, n * sizeof(float));
    return;
  }
  // p_i < min_p * p_max  <=>  exp(x_i - m) < min_p  <=>  x_i < m + log(min_p)
  const float thr = float_at_least(m + std::log(min_p));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = x[i] < thr ? fv : x[i];
    kept += x[i] >= thr;
  }
  if (kept < min_keep) restore_best(x, out, n, min_keep, true, buf);  // stable descending: first ones stay
}

}  // namespace pyengine
