// The torch launcher of the CUDA fused sampling step: `fused_sample` for CUDA tensors
// (schema in csrc/torch/registration.cpp; device code in csrc/include/pyengine/cuda/sampling.cuh).
//
// Per-row parameters may live on the host (pyengine/backends/torch/cuda.py passes them so): the launcher
// then checks them, decides on the host whether the processing pass is needed at all, and copies them to
// the device as two packed tensors (float64 and int64 rows).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "pyengine/cuda/sampling.cuh"

namespace {

constexpr int kThreads = 1024;
constexpr int kPivots = 16;

// The per-row parameters of one dtype stacked into one [n, B] tensor on the device: one copy per dtype
// when they come from the host (the usual case: the engine passes Python values), none when on the device.
at::Tensor packed(std::initializer_list<std::pair<const at::Tensor*, const char*>> params, at::ScalarType dtype,
                  int64_t batch, const at::Device& device, bool* on_host) {
  *on_host = true;
  for (const auto& [t, name] : params) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == batch, "fused_sample: ", name, " must be [batch] = [", batch,
                "], got ", t->sizes());
    *on_host = *on_host && t->device().is_cpu();
  }
  std::vector<at::Tensor> rows;
  for (const auto& [t, name] : params) rows.push_back(t->to(*on_host ? at::Device(at::kCPU) : device, dtype));
  auto out = at::stack(rows);
  return *on_host ? out.to(device) : out;
}

at::Tensor ids(c10::IntArrayRef values, int64_t vocab, const at::Device& device, const char* name) {
  for (int64_t v : values) {
    TORCH_CHECK(v >= 0 && v < vocab, "fused_sample: ", name, " id ", v, " is outside the vocabulary [0, ", vocab, ")");
  }
  return at::tensor(std::vector<int64_t>(values.begin(), values.end()), at::kLong).to(device);
}

template <typename T>
void launch(const at::Tensor& x, const pyengine::cuda::SampleParams& p, at::Tensor& out, cudaStream_t stream) {
  pyengine::cuda::fused_sample_kernel<T, kThreads, kPivots><<<x.size(0), kThreads, 0, stream>>>(
      reinterpret_cast<const T*>(x.data_ptr()), x.stride(0), x.size(1), p, out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor fused_sample_cuda(const at::Tensor& scores, const at::Tensor& tokens, const at::Tensor& cur_len,
                             const at::Tensor& penalty, const at::Tensor& min_len, c10::IntArrayRef eos_token_ids,
                             c10::IntArrayRef banned_ids, const at::Tensor& temperature, const at::Tensor& top_k,
                             const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor& seed,
                             const at::Tensor& step, int64_t min_tokens_to_keep) {
  TORCH_CHECK(scores.is_cuda() && scores.dim() == 2, "fused_sample: scores must be a [batch, vocab] CUDA tensor");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == scores.size(0) && tokens.scalar_type() == at::kLong,
              "fused_sample: tokens must be [batch, length] int64");
  TORCH_CHECK(min_tokens_to_keep >= 1, "fused_sample: min_tokens_to_keep must be >= 1");
  const auto st = scores.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16,
              "fused_sample: scores must be float32, float16 or bfloat16, got ", st);
  const c10::cuda::CUDAGuard guard(scores.device());
  const int64_t B = scores.size(0), V = scores.size(1);
  const at::Device dev = scores.device();
  auto out = at::zeros({B}, scores.options().dtype(at::kLong));
  if (B == 0 || V == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  bool host_f = false, host_i = false;
  // float64 rows: temperature, top_p, min_p, penalty; int64 rows: top_k, seed, step, cur_len, min_len
  const auto f = packed({{&temperature, "temperature"}, {&top_p, "top_p"}, {&min_p, "min_p"}, {&penalty, "penalty"}},
                        at::kDouble, B, dev, &host_f);
  const auto n = packed({{&top_k, "top_k"}, {&seed, "seed"}, {&step, "step"}, {&cur_len, "cur_len"}, {&min_len, "min_len"}},
                        at::kLong, B, dev, &host_i);
  // Checks and the skip of the processing pass need the values on the host: done only when they are there.
  bool process = !banned_ids.empty() || !host_f || (!eos_token_ids.empty() && !host_i);
  if (host_f) {
    TORCH_CHECK((temperature > 0).all().item<bool>(), "fused_sample: temperature must be > 0");
    TORCH_CHECK(((top_p >= 0) & (top_p <= 1)).all().item<bool>(), "fused_sample: top_p must be in [0, 1]");
    TORCH_CHECK(((min_p >= 0) & (min_p <= 1)).all().item<bool>(), "fused_sample: min_p must be in [0, 1]");
    process = process || (penalty != 1.0).any().item<bool>();
  }
  if (host_i) {
    TORCH_CHECK(((cur_len >= 0) & (cur_len <= tokens.size(1))).all().item<bool>(),
                "fused_sample: cur_len must be in [0, tokens.size(1)]");
    process = process || (!eos_token_ids.empty() && (cur_len < min_len).any().item<bool>());
  }

  at::Tensor x = scores.stride(1) == 1 ? scores : scores.contiguous();
  if (process) {
    const auto tok = tokens.to(dev).contiguous();
    const auto pens = f[3].to(at::kFloat).contiguous();  // the penalty in float32, as transformers applies it
    const auto eos = ids(eos_token_ids, V, dev, "EOS");
    const auto ban = ids(banned_ids, V, dev, "banned");
    auto work = at::empty({B, V}, scores.options().dtype(at::kFloat));
#define PYENGINE_PROCESS(T)                                                                                        \
  pyengine::cuda::process_logits_kernel<T, kThreads><<<B, kThreads, 0, stream>>>(                                 \
      reinterpret_cast<const T*>(x.data_ptr()), x.stride(0), work.data_ptr<float>(), tok.data_ptr<int64_t>(),      \
      tok.stride(0), n[3].data_ptr<int64_t>(), pens.data_ptr<float>(), n[4].data_ptr<int64_t>(),                  \
      eos.data_ptr<int64_t>(), eos.numel(), ban.data_ptr<int64_t>(), ban.numel(), V)
    if (st == at::kFloat) {
      PYENGINE_PROCESS(float);
    } else if (st == at::kHalf) {
      PYENGINE_PROCESS(__half);
    } else {
      PYENGINE_PROCESS(__nv_bfloat16);
    }
#undef PYENGINE_PROCESS
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    x = work;
  }
  const pyengine::cuda::SampleParams params{f[0].data_ptr<double>(), n[0].data_ptr<int64_t>(), f[1].data_ptr<double>(),
                                            f[2].data_ptr<double>(), n[1].data_ptr<int64_t>(), n[2].data_ptr<int64_t>(),
                                            min_tokens_to_keep};
  const auto xt = x.scalar_type();
  if (xt == at::kFloat) {
    launch<float>(x, params, out, stream);
  } else if (xt == at::kHalf) {
    launch<__half>(x, params, out, stream);
  } else {
    launch<__nv_bfloat16>(x, params, out, stream);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CUDA, m) { m.impl("fused_sample", &fused_sample_cuda); }
