// Device helpers shared by the CUDA kernels: counter-based noise, order-preserving float keys, loads of
// float / half / bfloat16, and block-wide reductions and scans (CUB, part of the CUDA toolkit).
// No framework headers: launchers in csrc/cuda/*.cu include this with torch; tests with nvcc alone.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <cub/cub.cuh>

namespace pyengine {
namespace cuda {

// ordered_key(-inf): below every finite key (the -0.0 / +0.0 pair shares key 0).
constexpr int64_t kKeyNegInf = -2139095041LL;

// The splitmix64 finaliser; uniform() gives the bits of pyengine/ops/random.py and csrc/include/pyengine/random.h.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

__device__ __forceinline__ double uniform(int64_t seed, int64_t step, int64_t row_key) {
  uint64_t h = mix64(static_cast<uint64_t>(seed) + 0x9E3779B97F4A7C15ULL);
  h = mix64(h ^ static_cast<uint64_t>(step));
  h = mix64(h ^ static_cast<uint64_t>(row_key));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

__device__ __forceinline__ int64_t ordered_key(float x) {
  if (x == 0.0f) x = 0.0f;  // -0.0 ties +0.0, as in the reference
  const int32_t bits = __float_as_int(x);
  return bits < 0 ? static_cast<int64_t>(bits ^ 0x7FFFFFFF) : static_cast<int64_t>(bits);
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a < b ? b : a; }
};
struct MinOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};

// Block-wide reductions and scans whose results every thread receives.
template <int THREADS>
struct BlockOps {
  using ReduceD = cub::BlockReduce<double, THREADS>;
  using ReduceL = cub::BlockReduce<long long, THREADS>;
  using ReduceF = cub::BlockReduce<float, THREADS>;
  using ScanD = cub::BlockScan<double, THREADS>;
  using ScanL = cub::BlockScan<long long, THREADS>;
  union Storage {
    typename ReduceD::TempStorage rd;
    typename ReduceL::TempStorage rl;
    typename ReduceF::TempStorage rf;
    typename ScanD::TempStorage sd;
    typename ScanL::TempStorage sl;
  };
  struct Shared {
    Storage tmp;
    double d;
    long long l;
    float f;
  };

  __device__ static double sum(double v, Shared& s) {
    const double r = ReduceD(s.tmp.rd).Sum(v);
    if (threadIdx.x == 0) s.d = r;
    __syncthreads();
    const double out = s.d;
    __syncthreads();
    return out;
  }
  __device__ static long long sum(long long v, Shared& s) {
    const long long r = ReduceL(s.tmp.rl).Sum(v);
    if (threadIdx.x == 0) s.l = r;
    __syncthreads();
    const long long out = s.l;
    __syncthreads();
    return out;
  }
  __device__ static long long max(long long v, Shared& s) {
    const long long r = ReduceL(s.tmp.rl).Reduce(v, MaxOp());
    if (threadIdx.x == 0) s.l = r;
    __syncthreads();
    const long long out = s.l;
    __syncthreads();
    return out;
  }
  __device__ static long long min(long long v, Shared& s) {
    const long long r = ReduceL(s.tmp.rl).Reduce(v, MinOp());
    if (threadIdx.x == 0) s.l = r;
    __syncthreads();
    const long long out = s.l;
    __syncthreads();
    return out;
  }
  __device__ static float max(float v, Shared& s) {
    const float r = ReduceF(s.tmp.rf).Reduce(v, MaxOp());
    if (threadIdx.x == 0) s.f = r;
    __syncthreads();
    const float out = s.f;
    __syncthreads();
    return out;
  }
  // exclusive prefix sums and the block total
  __device__ static double exclusive(double v, double* total, Shared& s) {
    double out;
    ScanD(s.tmp.sd).ExclusiveSum(v, out, *total);
    __syncthreads();
    return out;
  }
  __device__ static long long exclusive(long long v, long long* total, Shared& s) {
    long long out;
    ScanL(s.tmp.sl).ExclusiveSum(v, out, *total);
    __syncthreads();
    return out;
  }
};

}  // namespace cuda
}  // namespace pyengine
