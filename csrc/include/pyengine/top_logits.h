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
