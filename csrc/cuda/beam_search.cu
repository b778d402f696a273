// The torch launcher of the CUDA beam step top-2K: `beam_topk` (schema defined here: the op exists only in
// CUDA builds; device code in csrc/include/pyengine/cuda/beam_search.cuh).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "pyengine/cuda/beam_search.cuh"

namespace {

constexpr int kThreads = 1024;
constexpr int kPivots = 16;

std::tuple<at::Tensor, at::Tensor> beam_topk_cuda(const at::Tensor& log_probs, const at::Tensor& beam_scores,
                                                  int64_t k2) {
  TORCH_CHECK(log_probs.is_cuda() && log_probs.dim() == 2 && log_probs.scalar_type() == at::kFloat,
              "beam_topk: log_probs must be a [batch * beams, vocab] float32 CUDA tensor");
  TORCH_CHECK(beam_scores.dim() == 2 && beam_scores.scalar_type() == at::kFloat,
              "beam_topk: beam_scores must be [batch, beams] float32");
  const int64_t B = beam_scores.size(0), K = beam_scores.size(1), V = log_probs.size(1);
  TORCH_CHECK(log_probs.size(0) == B * K, "beam_topk: log_probs has ", log_probs.size(0), " rows; expected ", B * K);
  TORCH_CHECK(k2 >= 1 && k2 <= K * V, "beam_topk: k2 must be in [1, beams * vocab], got ", k2);
  const c10::cuda::CUDAGuard guard(log_probs.device());
  const auto lp = log_probs.contiguous();
  const auto bs = beam_scores.to(log_probs.device()).contiguous();
  auto out_s = at::empty({B, k2}, lp.options());
  auto out_i = at::empty({B, k2}, lp.options().dtype(at::kLong));
  auto slot_s = at::empty({B, k2}, lp.options());
  auto slot_i = at::empty({B, k2}, lp.options().dtype(at::kLong));
  if (B == 0) return {out_s, out_i};
  pyengine::cuda::beam_topk_kernel<kThreads, kPivots><<<B, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      lp.data_ptr<float>(), bs.data_ptr<float>(), K, V, k2, slot_s.data_ptr<float>(), slot_i.data_ptr<int64_t>(),
      out_s.data_ptr<float>(), out_i.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out_s, out_i};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyengine, m) {
  m.def("beam_topk(Tensor log_probs, Tensor beam_scores, int k2) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyengine, CUDA, m) { m.impl("beam_topk", &beam_topk_cuda); }
