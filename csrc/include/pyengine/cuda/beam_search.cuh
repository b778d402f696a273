// Beam search step on the GPU: beam scores added and the top k2 over (beams x vocab), one block per batch item.
// Spec: kernels/triton/beam_search.py (the Triton twin) and tests/gpu_kernels/test_beam_topk.py: candidate
// `log_probs[b*K + beam, tok] + beam_scores[b, beam]` (float) at flat index `beam * V + tok`; the k2 best in
// descending score, ties to the lower flat index.
//
// No sort of the K * V candidates: the k2-th largest key by multi-pivot bisection (~8 passes with P = 16),
// then one tiled pass compacts the survivors (above it, then its earliest ties) into k2 slots, and each of
// the k2 survivors finds its rank by comparing with the others. Traffic: ~10 reads of K * V floats per batch
// item, 2 * k2 writes; the [B, K * V] sum is never written.
#pragma once

#include "pyengine/cuda/common.cuh"

namespace pyengine {
namespace cuda {

struct BeamView {
  const float* lp;  // [K * V] of this batch item
  const float* bs;  // [K]
  int64_t N, V;
  __device__ __forceinline__ float at(int64_t i) const { return lp[i] + bs[i / V]; }
};

template <int THREADS, int P>
__global__ void beam_topk_kernel(const float* __restrict__ log_probs, const float* __restrict__ beam_scores,
                                 int64_t K, int64_t V, int64_t k2, float* __restrict__ slot_s,
                                 int64_t* __restrict__ slot_i, float* __restrict__ out_s,
                                 int64_t* __restrict__ out_i) {
  using B = BlockOps<THREADS>;
  __shared__ typename B::Shared sh;
  const int64_t b = blockIdx.x;
  const int64_t N = K * V;
  const BeamView view{log_probs + b * N, beam_scores + b * K, N, V};

  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < N; i += THREADS) m = fmaxf(m, view.at(i));
  m = B::max(m, sh);
  // the k2-th largest key: the largest key K with count(key < K) <= N - k2
  int64_t lo = kKeyNegInf, hi = ordered_key(m);
  while (lo < hi) {
    int64_t piv[P];
    long long acc[P];
#pragma unroll
    for (int j = 0; j < P; ++j) {
      piv[j] = lo + 1 + ((hi - lo - 1) * (j + 1)) / P;
      acc[j] = 0;
    }
    for (int64_t i = threadIdx.x; i < N; i += THREADS) {
      const int64_t key = ordered_key(view.at(i));
#pragma unroll
      for (int j = 0; j < P; ++j) acc[j] += key < piv[j];
    }
    int64_t new_lo = lo, new_hi = hi;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      if (B::sum(acc[j], sh) <= N - k2) {
        new_lo = piv[j] > new_lo ? piv[j] : new_lo;
      } else {
        new_hi = piv[j] - 1 < new_hi ? piv[j] - 1 : new_hi;
      }
    }
    lo = new_lo;
    hi = new_hi;
  }
  const int64_t kth = lo;
  long long n_above = 0;
  for (int64_t i = threadIdx.x; i < N; i += THREADS) n_above += ordered_key(view.at(i)) > kth;
  n_above = B::sum(n_above, sh);

  // compaction in flat-index order: scores above the k2-th, then the earliest ties
  float* ss = slot_s + b * k2;
  int64_t* si = slot_i + b * k2;
  long long taken_above = 0, taken_ties = 0;
  for (int64_t base = 0; base < N; base += THREADS) {
    const int64_t i = base + threadIdx.x;
    const float v = i < N ? view.at(i) : -INFINITY;
    const int64_t key = ordered_key(v);
    const long long above = (i < N && key > kth) ? 1 : 0;
    const long long tie = (i < N && key == kth) ? 1 : 0;
    long long tile_above, tile_ties;
    const long long ra = taken_above + B::exclusive(above, &tile_above, sh);
    const long long rt = taken_ties + B::exclusive(tie, &tile_ties, sh);
    if (above) {
      ss[ra] = v;
      si[ra] = i;
    } else if (tie && n_above + rt < k2) {
      ss[n_above + rt] = v;
      si[n_above + rt] = i;
    }
    taken_above += tile_above;
    taken_ties += tile_ties;
  }
  __syncthreads();
  // rank: descending score, ties to the lower flat index
  for (int64_t a = threadIdx.x; a < k2; a += THREADS) {
    const int64_t ka = ordered_key(ss[a]);
    const int64_t ia = si[a];
    int64_t rank = 0;
    for (int64_t c = 0; c < k2; ++c) {
      const int64_t kc = ordered_key(ss[c]);
      rank += kc > ka || (kc == ka && si[c] < ia);
    }
    out_s[b * k2 + rank] = ss[a];
    out_i[b * k2 + rank] = ia;
  }
}

}  // namespace cuda
}  // namespace pyengine
