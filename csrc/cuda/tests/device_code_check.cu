// Compile check of the header-only CUDA device code (tools/check_cuda.sh): instantiates every kernel
// template for every score type with the launch shapes the torch launchers use. Needs nvcc only (no torch).
#include "pyengine/cuda/beam_search.cuh"
#include "pyengine/cuda/sampling.cuh"

namespace pc = pyengine::cuda;

template <typename T>
void instantiate(const T* scores, float* work, const int64_t* ids, const float* pen, pc::SampleParams p,
                 int64_t* out, cudaStream_t stream) {
  pc::process_logits_kernel<T, 1024><<<1, 1024, 0, stream>>>(scores, 8, work, ids, 2, ids, pen, ids, ids, 1,
                                                              ids, 1, 8);
  pc::fused_sample_kernel<T, 1024, 16><<<1, 1024, 0, stream>>>(scores, 8, 8, p, out);
}

void check_all(cudaStream_t stream) {
  pc::SampleParams p{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1};
  instantiate<float>(nullptr, nullptr, nullptr, nullptr, p, nullptr, stream);
  instantiate<__half>(nullptr, nullptr, nullptr, nullptr, p, nullptr, stream);
  instantiate<__nv_bfloat16>(nullptr, nullptr, nullptr, nullptr, p, nullptr, stream);
  pc::fused_sample_kernel<float, 1024, 16><<<1, 1024, 0, stream>>>(nullptr, 8, 8, p, nullptr);
  pc::beam_topk_kernel<1024, 16><<<1, 1024, 0, stream>>>(nullptr, nullptr, 2, 8, 4, nullptr, nullptr, nullptr,
                                                         nullptr);
}
