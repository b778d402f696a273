// Fused processors + selection for one row (spec: pyengine/ops/fused.py `fused_sample`, `fused_argmax`).
//
// In transformers' order: repetition penalty, min-length EOS ban, banned ids, temperature, top-k, top-p,
// min-p, then an inverse-CDF draw in vocabulary order. The row is copied once into scratch (L2-resident
// for real vocabularies), the penalties touch only the history's ids, and with top-k on, every later
// step works on the k (+ ties) survivors gathered in one streaming pass; without it, on the full row.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pyengine/logits.h"
#include "pyengine/sampling.h"

namespace pyengine {

struct RowParams {
  float penalty = 1.0f;
  bool ban_eos = false;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  int64_t min_tokens_to_keep = 1;
  double u = 0.0;  // uniform noise in [0, 1)
};

// Shared per-call inputs: EOS ids and banned single-token ids.
struct BanLists {
  const int64_t* eos;
  int64_t n_eos;
  const int64_t* banned;
  int64_t n_banned;
};

// Per-thread buffers, sized for one row of V tokens.
struct FusedScratch {
  std::vector<float> x, cv, pv;
  std::vector<double> ce, pe;
  std::vector<int32_t> ci, pi;
  explicit FusedScratch(int64_t V)
      : x(V + 16), cv(V + 16), pv(V + 16), ce(V + 16), pe(V + 16), ci(V + 16), pi(V + 16) {}
};

// The processed row (penalty and bans applied), written to w.x.
inline void fused_logits_row(const float* s, int64_t V, const int64_t* tok, int64_t T, const RowParams& p,
                             const BanLists& bans, FusedScratch& w) {
  float* x = w.x.data();
  if (p.penalty != 1.0f) {
    repetition_penalty_row(s, x, V, tok, T, p.penalty);
  } else {
    std::memcpy(x, s, V * sizeof(float));
  }
  if (p.ban_eos) ban_ids_row(x, bans.eos, bans.n_eos);
  ban_ids_row(x, bans.banned, bans.n_banned);
}

// Zeroes the masses min-p removes: p_i < min_p * p_max  <=>  x_i < m + t * log(min_p), with the
// min_tokens_to_keep best (ties to the lower index) always kept.
inline void min_p_zero(const float* v, double* e, int64_t n, float m, const RowParams& p, FusedScratch& w) {
  const float thr = float_at_least(m + p.temperature * std::log(p.min_p));
  int64_t kept = 0;
  for (int64_t j = 0; j < n; ++j) kept += e[j] > 0 && v[j] >= thr;
  if (kept >= p.min_tokens_to_keep) {
    for (int64_t j = 0; j < n; ++j) e[j] = v[j] < thr ? 0.0 : e[j];
    return;
  }
  // Rare: keep the best min_tokens_to_keep of the survivors (the others are -inf to min-p).
  float* live = w.pv.data();
  for (int64_t j = 0; j < n; ++j) live[j] = e[j] > 0 ? v[j] : kNegInf;
  std::vector<char> keep(n, 0);
  std::vector<float> buf(n + 16);
  keep_best(live, n, std::min(p.min_tokens_to_keep, n), true, buf.data(), [&](int64_t j) { keep[j] = 1; });
  for (int64_t j = 0; j < n; ++j) e[j] = keep[j] ? e[j] : 0.0;
}

// Zeroes the masses outside the nucleus; keeps the min_tokens_to_keep best (ties to the higher index).
inline void top_p_zero(const float* v, double* e, const int32_t* idx, int64_t n, double total, const RowParams& p,
                       FusedScratch& w) {
  int64_t removed;
  const Candidates c{w.pv.data(), w.pe.data(), w.pi.data()};
  const Cut cut = top_p_cut(v, e, idx, n, (1.0 - p.top_p) * total, c, &removed);
  auto id = [&](int64_t j) { return idx ? static_cast<int64_t>(idx[j]) : j; };
  if (n - removed >= p.min_tokens_to_keep) {
    for (int64_t j = 0; j < n; ++j) e[j] = cut.removes(v[j], id(j)) ? 0.0 : e[j];
    return;
  }
  std::vector<char> keep(n, 0);
  std::vector<float> buf(n + 16);
  keep_best(v, n, std::min(p.min_tokens_to_keep, n), false, buf.data(), [&](int64_t j) { keep[j] = 1; });
  for (int64_t j = 0; j < n; ++j) e[j] = keep[j] ? e[j] : 0.0;
}

// Inverse CDF in index order: the first token whose running mass exceeds u * total; when rounding leaves
// none, the last token with mass.
inline int64_t draw(const double* e, const int32_t* idx, int64_t n, double u) {
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) total += e[j];
  const double target = u * total;
  double cum = 0.0;
  int64_t j = 0, last = 0;
#if PYENGINE_AVX512
  for (; j + 8 <= n; j += 8) {  // skip whole blocks that stay below the target
    const double block = _mm512_reduce_add_pd(_mm512_loadu_pd(e + j));
    if (cum + block > target) break;
    cum += block;
  }
#endif
  for (; j < n; ++j) {
    if (e[j] <= 0) continue;
    last = j;
    cum += e[j];
    if (cum > target) break;
  }
  if (j == n) {  // rounding: fall back to the last token with mass
    for (j = n - 1; j > 0 && !(e[j] > 0); --j) {
    }
    last = j;
  }
  return idx ? idx[last] : last;
}

// One row of fused_sample. Returns the drawn id (0 for a row with no finite score, as the reference).
inline int64_t fused_sample_row(const float* s, int64_t V, const int64_t* tok, int64_t T, const RowParams& p,
                                const BanLists& bans, FusedScratch& w) {
  fused_logits_row(s, V, tok, T, p, bans, w);
  const float* x = w.x.data();
  const float m = row_max(x, V);
  if (!(m > kNegInf)) return 0;
  const float* v = x;
  const int32_t* idx = nullptr;
  int64_t n = V;
  if (p.top_k > 0) {  // keep >= the k-th largest: ties stay, as transformers
    const int64_t k = std::min(std::max(p.top_k, p.min_tokens_to_keep), V);
    const float kth = kth_largest(x, V, k, w.cv.data());
    if (kth > kNegInf) {
      n = gather_at_least(x, V, kth, w.cv.data(), w.ci.data());
      v = w.cv.data(), idx = w.ci.data();
    }
  }
  double* e = w.ce.data();
  const double total = exp_store(v, n, m, 1.0 / p.temperature, e);
  if (p.top_p < 1.0) top_p_zero(v, e, idx, n, total, p, w);
  if (p.min_p > 0.0) min_p_zero(v, e, n, m, p, w);
  return draw(e, idx, n, p.u);
}

inline int64_t fused_argmax_row(const float* s, int64_t V, const int64_t* tok, int64_t T, const RowParams& p,
                                const BanLists& bans, FusedScratch& w) {
  fused_logits_row(s, V, tok, T, p, bans, w);
  return argmax_row(w.x.data(), V);
}

}  // namespace pyengine
