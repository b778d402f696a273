// Fused sampling on the GPU, one thread block per row (spec: pyengine/ops/fused.py; the Triton twin is
// kernels/triton/sampling.py, same algorithm and the same noise, so both draw the reference's token).
//
// process_logits_kernel   [B, V] T -> [B, V] float: repetition penalty over the row's history (gather from
//                         the input, scatter into the copy), min-length EOS ban, banned ids.
//                         Traffic: read V + write V, plus 2 * cur_len for the penalty.
// fused_sample_kernel     [B, V] T -> [B] int64. No sort: every threshold is a bisection over the
//                         order-preserving int keys of the logits, P pivots per pass (a pass narrows the key
//                         range P + 1 times): max (1 pass), top-k (~8 with P = 16), total (1), top-p (~8) +
//                         tie statistics (1), final total (1), inverse-CDF draw in vocabulary order (<= 1).
//                         Traffic: about 20 reads of the row with every filter on (L2-resident), 3 with none.
// T is float, __half or __nv_bfloat16; arithmetic in float, sums in double.
#pragma once

#include <climits>

#include "pyengine/cuda/common.cuh"

namespace pyengine {
namespace cuda {

struct SampleParams {
  const double* temperature;  // [B] > 0
  const int64_t* top_k;       // [B] 0 = off
  const double* top_p;        // [B] 1 = off
  const double* min_p;        // [B] 0 = off
  const int64_t* seed;        // [B]
  const int64_t* step;        // [B]
  int64_t min_keep;           // min_tokens_to_keep (min-p's keep-fallback is not covered: min_keep > 1 with min-p)
};

template <typename T, int THREADS>
__global__ void process_logits_kernel(const T* __restrict__ scores, int64_t stride_s, float* __restrict__ out,
                                      const int64_t* __restrict__ tokens, int64_t stride_t,
                                      const int64_t* __restrict__ cur_len, const float* __restrict__ penalty,
                                      const int64_t* __restrict__ min_len, const int64_t* __restrict__ eos,
                                      int64_t n_eos, const int64_t* __restrict__ banned, int64_t n_banned,
                                      int64_t V) {
  const int64_t row = blockIdx.x;
  const T* src = scores + row * stride_s;
  float* dst = out + row * V;
  for (int64_t i = threadIdx.x; i < V; i += THREADS) dst[i] = to_float(src[i]);
  __syncthreads();
  const int64_t n = cur_len[row];
  const float pen = penalty[row];
  if (pen != 1.0f) {  // duplicates write the same value
    for (int64_t j = threadIdx.x; j < n; j += THREADS) {
      const int64_t id = tokens[row * stride_t + j];
      if (id < 0 || id >= V) continue;
      const float s = to_float(src[id]);
      dst[id] = s < 0.0f ? s * pen : __fdiv_rn(s, pen);
    }
  }
  __syncthreads();
  if (n < min_len[row]) {
    for (int64_t j = threadIdx.x; j < n_eos; j += THREADS)
      if (eos[j] >= 0 && eos[j] < V) dst[eos[j]] = -INFINITY;
  }
  for (int64_t j = threadIdx.x; j < n_banned; j += THREADS)
    if (banned[j] >= 0 && banned[j] < V) dst[banned[j]] = -INFINITY;
}

// One row seen through the filters decided so far.
template <typename T>
struct RowView {
  const T* x;
  int64_t V;
  float m;      // the row's max (0 for a row without a finite score)
  float inv_t;  // 1 / temperature
  int64_t kth;  // top-k key: tokens below it are out (key -inf, no mass)

  __device__ __forceinline__ void at(int64_t i, int64_t* key, float* e) const {
    const float v = to_float(x[i]);
    const int64_t k = ordered_key(v);
    const bool live = k >= kth;
    *key = live ? k : kKeyNegInf;
    *e = live ? __expf((v - m) * inv_t) : 0.0f;
  }
};

// The largest key K in [lo, hi] with weight(key < K) <= target; weight = 1 (count) or the mass.
template <typename T, int THREADS, int P>
__device__ int64_t largest_key(const RowView<T>& row, int64_t lo, int64_t hi, double target, bool use_mass,
                               typename BlockOps<THREADS>::Shared& sh) {
  while (lo < hi) {
    int64_t piv[P];
    double acc[P];
#pragma unroll
    for (int j = 0; j < P; ++j) {
      piv[j] = lo + 1 + ((hi - lo - 1) * (j + 1)) / P;
      acc[j] = 0.0;
    }
    for (int64_t i = threadIdx.x; i < row.V; i += THREADS) {
      int64_t key;
      float e;
      row.at(i, &key, &e);
      const double w = use_mass ? static_cast<double>(e) : 1.0;
#pragma unroll
      for (int j = 0; j < P; ++j) acc[j] += key < piv[j] ? w : 0.0;
    }
    int64_t new_lo = lo, new_hi = hi;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      if (BlockOps<THREADS>::sum(acc[j], sh) <= target) {
        new_lo = piv[j] > new_lo ? piv[j] : new_lo;
      } else {
        new_hi = piv[j] - 1 < new_hi ? piv[j] - 1 : new_hi;
      }
    }
    lo = new_lo;
    hi = new_hi;
  }
  return lo;
}

struct TieStats {
  double mass_below, pv;
  long long n_below, n_ties, n_above;
};

template <typename T, int THREADS>
__device__ TieStats tie_stats(const RowView<T>& row, int64_t vb, typename BlockOps<THREADS>::Shared& sh) {
  double mass_below = 0.0, pv = 0.0;
  long long n_below = 0, n_ties = 0, n_above = 0;
  for (int64_t i = threadIdx.x; i < row.V; i += THREADS) {
    int64_t key;
    float e;
    row.at(i, &key, &e);
    if (key < vb) {
      mass_below += e;
      ++n_below;
    } else if (key == vb) {
      ++n_ties;
      pv = e > pv ? e : pv;
    } else {
      ++n_above;
    }
  }
  using B = BlockOps<THREADS>;
  TieStats s;
  s.mass_below = B::sum(mass_below, sh);
  s.n_below = B::sum(n_below, sh);
  s.n_ties = B::sum(n_ties, sh);
  s.n_above = B::sum(n_above, sh);
  const long long pv_bits = B::max(static_cast<long long>(__double_as_longlong(pv)), sh);  // pv >= 0: bits order
  s.pv = __longlong_as_double(pv_bits);
  return s;
}

template <typename T, int THREADS, int P>
__global__ void fused_sample_kernel(const T* __restrict__ x, int64_t stride_x, int64_t V, SampleParams p,
                                    int64_t* __restrict__ out) {
  using B = BlockOps<THREADS>;
  __shared__ typename B::Shared sh;
  const int64_t row = blockIdx.x;
  RowView<T> view{x + row * stride_x, V, 0.0f, 1.0f, kKeyNegInf};

  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += THREADS) m = fmaxf(m, to_float(view.x[i]));
  m = B::max(m, sh);
  if (m == -INFINITY) {  // no finite score: token 0, as the reference
    if (threadIdx.x == 0) out[row] = 0;
    return;
  }
  view.m = m;
  view.inv_t = static_cast<float>(1.0 / p.temperature[row]);
  const int64_t max_key = ordered_key(m);
  const int64_t top_k = p.top_k[row];
  const double top_p = p.top_p[row];
  const float min_p = static_cast<float>(p.min_p[row]);

  if (top_k > 0) {  // the k-th largest key; ties at it all stay
    int64_t k = top_k > p.min_keep ? top_k : p.min_keep;
    k = k < V ? k : V;
    view.kth = largest_key<T, THREADS, P>(view, kKeyNegInf, max_key, static_cast<double>(V - k), false, sh);
  }
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += THREADS) {
    int64_t key;
    float e;
    view.at(i, &key, &e);
    total += e;
  }
  total = B::sum(total, sh);

  int64_t vb = kKeyNegInf - 1;  // top-p boundary key: below it out, above it in, ties at it by rank
  long long r = 0;              // the first r ties (vocabulary order) are out
  if (top_p < 1.0) {
    const double target = (1.0 - top_p) * total;
    vb = largest_key<T, THREADS, P>(view, kKeyNegInf, max_key + 1, target, true, sh);
    TieStats s = tie_stats<T, THREADS>(view, vb, sh);
    if (s.pv > 0.0) {
      long long fit = static_cast<long long>(floor((target - s.mass_below) / s.pv));
      r = fit < 0 ? 0 : (fit > s.n_ties ? s.n_ties : fit);
    } else {
      r = s.n_ties;
    }
    if (s.n_above + s.n_ties - r < p.min_keep) {  // keep the last min_keep of the ascending order
      const long long limit = V - p.min_keep;
      vb = largest_key<T, THREADS, P>(view, kKeyNegInf, max_key + 1, static_cast<double>(limit), false, sh);
      s = tie_stats<T, THREADS>(view, vb, sh);
      const long long rest = limit - s.n_below;
      r = rest < 0 ? 0 : (rest > s.n_ties ? s.n_ties : rest);
    }
  }

  // Two tiled passes in vocabulary order: the final total (and the last token with mass), then the draw.
  double final_total = 0.0;
  long long last = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const double target = pass == 1 ? uniform(p.seed[row], p.step[row], 0) * final_total : 0.0;
    double carry = 0.0;
    long long tie_carry = 0;
    for (int64_t base = 0; base < V; base += THREADS) {
      const int64_t i = base + threadIdx.x;
      int64_t key = kKeyNegInf;
      float e = 0.0f;
      if (i < V) view.at(i, &key, &e);
      const long long tie = (i < V && key == vb) ? 1 : 0;
      long long ties_in_tile;
      const long long rank = tie_carry + B::exclusive(tie, &ties_in_tile, sh);
      tie_carry += ties_in_tile;
      const bool keep = i < V && (key > vb || (tie && rank >= r)) && e >= min_p && e > 0.0f;
      const double mass = keep ? static_cast<double>(e) : 0.0;
      double tile_total;
      const double before = carry + B::exclusive(mass, &tile_total, sh);
      carry += tile_total;
      if (pass == 0) {
        last = B::max(keep ? static_cast<long long>(i) : last, sh);
      } else {
        const long long hit = B::min(keep && before + mass > target ? static_cast<long long>(i) : LLONG_MAX, sh);
        if (hit != LLONG_MAX) {
          if (threadIdx.x == 0) out[row] = hit;
          return;
        }
      }
    }
    final_total = carry;
  }
  if (threadIdx.x == 0) out[row] = last;  // rounding left u * total at the very top
}

}  // namespace cuda
}  // namespace pyengine
