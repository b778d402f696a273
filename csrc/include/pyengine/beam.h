// Beam search step (spec: pyengine/ops/beam.py `beam_step`): log-softmax, processors, top-K2 over
// beams x vocabulary, and transformers 4.57's finished-hypothesis bookkeeping, for one batch item.
//
// Memory traffic per row of V logits: one read for the max, one for the exp-sum, one write of the
// processed log-probs (a reused per-thread row, or the caller's `scores` output), one read to select.
// The selection never materialises `log_probs + beam_score` over K*V: each row keeps its own best K2
// (a candidate is computed and compared only; almost every one is rejected by one compare against the
// current K2-th), then the K row lists merge. The bookkeeping touches only K2 candidates and the
// K beams' token rows. Header-only, no torch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pyengine/vec.h"

namespace pyengine {

constexpr float kBeamNeg = -1.0e9f;  // transformers' "never pick this" (finite)

// A candidate: its score and its flat index (k * V + token over the K*V of one batch item).
struct Cand {
  float v;
  int64_t i;
};

// The candidate order: score descending, ties to the lower index; NaN before everything (torch.topk's
// order, so poisoned logits behave as in transformers).
inline bool better(const Cand& a, const Cand& b) {
  const bool an = std::isnan(a.v), bn = std::isnan(b.v);
  if (an || bn) return an == bn ? a.i < b.i : an;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

// The best n of a stream of candidates pushed in increasing index order, kept sorted best first.
class TopN {
 public:
  explicit TopN(int64_t n) : n_(n) { buf_.reserve(n + 1); }
  void clear() { buf_.clear(); }
  bool full() const { return static_cast<int64_t>(buf_.size()) == n_; }
  // The score a new (later-indexed) candidate must beat when full: a tie loses to the earlier index.
  float bar() const { return buf_.back().v; }
  void push(const Cand& c) {
    if (full() && !better(c, buf_.back())) return;
    auto pos = std::upper_bound(buf_.begin(), buf_.end(), c, better);
    buf_.insert(pos, c);
    if (static_cast<int64_t>(buf_.size()) > n_) buf_.pop_back();
  }
  const std::vector<Cand>& items() const { return buf_; }

 private:
  int64_t n_;
  std::vector<Cand> buf_;
};

// sum_i exp(x[i] - m), accumulated in double; m is the row's max (so every argument is <= 0).
inline double exp_sum(const float* x, int64_t n, float m) {
  int64_t i = 0;
  double sum = 0.0;
#if PYENGINE_AVX512
  const __m512 vm = _mm512_set1_ps(m);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp_neg_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(e), 1))));
  }
  sum = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
#endif
  for (; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - m));
  return sum;
}

// True when x[0, n) holds a NaN.
inline bool has_nan(const float* x, int64_t n) {
  int64_t i = 0;
#if PYENGINE_AVX512
  __mmask16 any = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    any |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  if (any) return true;
#endif
  for (; i < n; ++i)
    if (x[i] != x[i]) return true;
  return false;
}

// out = (x - max) - log(sum(exp(x - max))) in float32. A row with a NaN or +inf logit, or no finite one,
// gives NaN everywhere, as torch's log_softmax does.
inline void log_softmax_row(const float* x, float* out, int64_t V) {
  const float m = row_max(x, V);
  if (!(std::fabs(m) <= 3.4e38f) || has_nan(x, V)) {
    std::fill(out, out + V, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  const float ls = static_cast<float>(std::log(exp_sum(x, V, m)));
  for (int64_t i = 0; i < V; ++i) out[i] = (x[i] - m) - ls;  // vectorised by -O3
}

// Processors on one row of log-probs, in place: repetition penalty over the history tok[0, T) (each id
// once, from its unpenalised value), then -inf for the ids in `ban` (EOS under min length, bad words).
inline void beam_processors_row(float* lp, const int64_t* tok, int64_t T, float penalty, const int64_t* ban,
                                int64_t n_ban, std::vector<float>& seen) {
  if (penalty != 1.0f && T > 0) {
    seen.resize(T);
    for (int64_t t = 0; t < T; ++t) seen[t] = lp[tok[t]];
    for (int64_t t = 0; t < T; ++t) lp[tok[t]] = seen[t] < 0 ? seen[t] * penalty : seen[t] / penalty;
  }
  for (int64_t j = 0; j < n_ban; ++j) lp[ban[j]] = kNegInf;
}

// Pushes row k's candidates lp[t] + r (index base + t) into `top`. Vector blocks whose every lane
// fails to beat the current bar are skipped with one compare.
inline void row_candidates(const float* lp, int64_t V, float r, int64_t base, TopN& top) {
  int64_t t = 0;
  for (; t < V && !top.full(); ++t) top.push({lp[t] + r, base + t});
#if PYENGINE_AVX512
  const __m512 vr = _mm512_set1_ps(r);
  for (; t + 16 <= V; t += 16) {
    const __m512 acc = _mm512_add_ps(_mm512_loadu_ps(lp + t), vr);
    // "not (acc <= bar)": true for scores above the bar and for NaN (push orders them exactly)
    __mmask16 hit = _mm512_cmp_ps_mask(acc, _mm512_set1_ps(top.bar()), _CMP_NLE_UQ);
    while (hit) {
      const int lane = __builtin_ctz(hit);
      hit &= hit - 1;
      top.push({lp[t + lane] + r, base + t + lane});
    }
  }
#endif
  for (; t < V; ++t) {
    const float acc = lp[t] + r;
    if (!(acc <= top.bar())) top.push({acc, base + t});
  }
}

// The fixed-shape beam state of one batch item (shapes: pyengine/engine/beam_search.py BeamState).
struct BeamItem {
  int64_t* running;       // [K, T]
  float* running_scores;  // [K]
  int64_t* running_idx;   // [K, T - S]
  int64_t* sequences;     // [K, T]
  float* beam_scores;     // [K]
  int64_t* beam_idx;      // [K, T - S]
  bool* is_finished;      // [K]
  bool* improvable;       // [1]
};

struct BeamStepParams {
  int64_t K, K2, V, T, S, cur;  // beams, candidates kept, vocabulary, max length, prompt length, length now
  double length_penalty;
  int64_t mode;  // early_stopping: 0 False, 1 True, 2 "never"
  bool stop_all;
  const int64_t* eos;
  int64_t n_eos;
};

// What one batch item reports for the search-wide stop decision.
struct BeamItemStatus {
  bool all_hit, all_finished, improvable;
};

// Indices of the best n of v[0, m) (score descending, ties to the lower index).
inline void best_of(const float* v, int64_t m, int64_t n, int64_t* out) {
  std::vector<Cand> c(m);
  for (int64_t j = 0; j < m; ++j) c[j] = {v[j], j};
  std::partial_sort(c.begin(), c.begin() + n, c.end(), better);
  for (int64_t j = 0; j < n; ++j) out[j] = c[j].i;
}

// Steps 4-7 of the spec for batch item b, given its K2 candidates best first. Writes parent[K] (flat
// rows b*K + k, the KV cache reorder index) and updates the state in place.
inline BeamItemStatus beam_update(const BeamItem& s, const Cand* cand, int64_t b, const BeamStepParams& p,
                                  int64_t* parent) {
  const int64_t K = p.K, K2 = p.K2, V = p.V, T = p.T, S = p.S, cur = p.cur, G = T - S, g = cur - S;
  std::vector<int64_t> src(K2), tok(K2);
  std::vector<char> hit(K2), just_done(K2);
  std::vector<float> live(K2), norm(K2);
  bool all_hit = true;
  for (int64_t j = 0; j < K2; ++j) {
    src[j] = cand[j].i / V, tok[j] = cand[j].i % V;
    bool h = p.stop_all || cur + 1 >= T;
    for (int64_t e = 0; e < p.n_eos && !h; ++e) h = tok[j] == p.eos[e];
    hit[j] = h, all_hit = all_hit && h;
    live[j] = h ? cand[j].v + kBeamNeg : cand[j].v;
  }
  // Old token rows and beam-index rows of the live beams: the candidates' sources.
  std::vector<int64_t> old_run(s.running, s.running + K * T), old_idx(s.running_idx, s.running_idx + K * G);

  // 5. the best K candidates that did not hit become the live beams
  std::vector<int64_t> pick(K);
  best_of(live.data(), K2, K, pick.data());
  for (int64_t j = 0; j < K; ++j) {
    const int64_t c = pick[j], k = src[c];
    std::memcpy(s.running + j * T, old_run.data() + k * T, cur * sizeof(int64_t));
    s.running[j * T + cur] = tok[c];
    std::memcpy(s.running_idx + j * G, old_idx.data() + k * G, g * sizeof(int64_t));
    s.running_idx[j * G + g] = b * K + k;
    s.running_scores[j] = live[c];
    parent[j] = b * K + k;
  }

  // 6. the top K that hit join the finished set, length-normalised
  const float den = static_cast<float>(std::pow(static_cast<double>(cur + 1 - S), p.length_penalty));
  bool all_fin = true;
  for (int64_t k = 0; k < K; ++k) all_fin = all_fin && s.is_finished[k];
  const bool full = all_fin && p.mode == 1;
  for (int64_t j = 0; j < K2; ++j) {
    just_done[j] = hit[j] && j < K;
    float x = cand[j].v / den;
    if (full) x += kBeamNeg;
    if (!*s.improvable) x += kBeamNeg;
    if (!just_done[j]) x += kBeamNeg;
    norm[j] = x;
  }
  std::vector<float> merged(K + K2);
  std::copy(s.beam_scores, s.beam_scores + K, merged.begin());
  std::copy(norm.begin(), norm.end(), merged.begin() + K);
  std::vector<int64_t> keep(K);
  best_of(merged.data(), K + K2, K, keep.data());
  bool same = true;
  for (int64_t j = 0; j < K; ++j) same = same && keep[j] == j;
  if (!same) {  // only then does the finished set change
    std::vector<int64_t> old_seq(s.sequences, s.sequences + K * T), old_bidx(s.beam_idx, s.beam_idx + K * G);
    std::vector<float> old_scores(s.beam_scores, s.beam_scores + K);
    std::vector<char> old_fin(s.is_finished, s.is_finished + K);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t m = keep[j];
      int64_t* seq = s.sequences + j * T;
      int64_t* bidx = s.beam_idx + j * G;
      if (m < K) {  // a hypothesis already finished: positions past cur + 1 hold the filler everywhere
        std::memcpy(seq, old_seq.data() + m * T, (cur + 1) * sizeof(int64_t));
        std::memcpy(bidx, old_bidx.data() + m * G, (g + 1) * sizeof(int64_t));
        s.beam_scores[j] = old_scores[m];
        s.is_finished[j] = old_fin[m];
      } else {  // candidate c: its source beam's tokens and indices plus this step's
        const int64_t c = m - K, k = src[c];
        std::memcpy(seq, old_run.data() + k * T, cur * sizeof(int64_t));
        seq[cur] = tok[c];
        std::memcpy(bidx, old_idx.data() + k * G, g * sizeof(int64_t));
        bidx[g] = b * K + k;
        s.beam_scores[j] = merged[m];
        s.is_finished[j] = just_done[c];
      }
    }
  }

  // 7. early-stop heuristic at the new length
  const int64_t best_len = (p.mode == 2 && p.length_penalty > 0.0) ? T - S : cur + 1 - S;
  const float best_running =
      s.running_scores[0] / static_cast<float>(std::pow(static_cast<double>(best_len), p.length_penalty));
  float worst = s.beam_scores[0];  // torch.min: a NaN wins
  for (int64_t k = 1; k < K; ++k) {
    const float v = s.beam_scores[k];
    worst = (v < worst || v != v) && worst == worst ? v : worst;
  }
  bool can_beat = false;
  all_fin = true;
  for (int64_t k = 0; k < K; ++k) {
    can_beat = can_beat || best_running > (s.is_finished[k] ? worst : kBeamNeg);
    all_fin = all_fin && s.is_finished[k];
  }
  *s.improvable = *s.improvable && can_beat;
  return {all_hit, all_fin, *s.improvable};
}

}  // namespace pyengine
