// CPU launcher for linear_into: small-M matrix products for decoding (kernels: csrc/include/pyengine/gemv.h).
//
// out[m, n] = (accumulate ? out[m, n] : 0) + bias[n] + scale[n] * (x[m] . w[n]), written in place into a
// caller-owned buffer, so a decode step allocates nothing. `weights` is a list whose output columns are
// laid side by side in `out` (q, k, v or gate, up): one call, one thread split, no concatenated copy of
// the parameters. The columns are split between threads in 64-column chunks, so each core streams its
// own slice of every weight matrix once per call.
#include "common.h"
#include "pyengine/gemv.h"

namespace pyengine::cpu {
namespace {

struct Part {
  const void* w;
  at::ScalarType type;
  const float* scale;
  const float* bias;
  int64_t N, offset;
};

void linear_into(at::Tensor& out, const at::Tensor& x, at::TensorList weights, at::TensorList scales,
                 at::TensorList biases, bool accumulate, bool weight_kn) {
  const char* op = "linear_into";
  TORCH_CHECK(x.device().is_cpu() && out.device().is_cpu(), "pyengine::", op, ": tensors must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat, "pyengine::", op,
              ": x and out must be float32, got ", x.scalar_type(), " and ", out.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "pyengine::", op, ": x must be [M, K] with unit inner stride, got ",
              x.sizes(), " strides ", x.strides());
  TORCH_CHECK(!weights.empty(), "pyengine::", op, ": pass at least one weight");
  TORCH_CHECK(scales.empty() || scales.size() == weights.size(), "pyengine::", op,
              ": scales must be empty or one per weight");
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(), "pyengine::", op,
              ": biases must be empty or one per weight");
  const int64_t M = x.size(0), K = x.size(1);
  std::vector<Part> parts;
  int64_t N = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK(w.device().is_cpu() && w.dim() == 2 && w.is_contiguous(), "pyengine::", op,
                ": every weight must be a contiguous 2-D CPU tensor");
    const auto t = w.scalar_type();
    TORCH_CHECK(t == at::kFloat || (!weight_kn && (t == at::kBFloat16 || t == at::kChar)), "pyengine::", op,
                ": weights must be float32, or bfloat16 / int8 in the [N, K] layout; got ", t);
    const int64_t n = weight_kn ? w.size(1) : w.size(0);
    TORCH_CHECK((weight_kn ? w.size(0) : w.size(1)) == K, "pyengine::", op, ": weight ", w.sizes(),
                (weight_kn ? " [K, N]" : " [N, K]"), " does not match x's K = ", K);
    Part p{w.const_data_ptr(), t, nullptr, nullptr, n, N};
    if (!scales.empty()) {
      TORCH_CHECK(scales[i].scalar_type() == at::kFloat && scales[i].is_contiguous() && scales[i].numel() == n,
                  "pyengine::", op, ": scale ", i, " must be a contiguous [", n, "] float32 tensor");
      p.scale = scales[i].const_data_ptr<float>();
    }
    TORCH_CHECK(t != at::kChar || p.scale, "pyengine::", op, ": int8 weights need a per-row float32 scale");
    if (!biases.empty()) {
      TORCH_CHECK(biases[i].scalar_type() == at::kFloat && biases[i].is_contiguous() && biases[i].numel() == n,
                  "pyengine::", op, ": bias ", i, " must be a contiguous [", n, "] float32 tensor");
      p.bias = biases[i].const_data_ptr<float>();
    }
    parts.push_back(p);
    N += n;
  }
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N && out.stride(1) == 1, "pyengine::", op,
              ": out must be [", M, ", ", N, "] with unit inner stride, got ", out.sizes());
  if (M == 0 || N == 0) return;
  // Work items: 64-column chunks of every part, in output order.
  std::vector<std::pair<int, int64_t>> chunks;  // (part, first column within the part)
  for (size_t i = 0; i < parts.size(); ++i)
    for (int64_t n = 0; n < parts[i].N; n += 64) chunks.emplace_back(static_cast<int>(i), n);
  const float* xp = x.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  const int64_t xs = x.stride(0), os = out.stride(0);
  const int64_t count = static_cast<int64_t>(chunks.size());
  // Below ~64k weights a thread wake-up costs more than the product itself.
  const int64_t grain = N * K < (1 << 16) ? count : 1;
  at::parallel_for(0, count, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1;) {  // consecutive chunks of one part run as one range
      const Part& p = parts[chunks[c].first];
      const int64_t n0 = chunks[c].second;
      int64_t n1 = std::min(p.N, n0 + 64);
      for (++c; c < c1 && chunks[c].first == chunks[c - 1].first; ++c) n1 = std::min(p.N, chunks[c].second + 64);
      float* po = o + p.offset;
      if (weight_kn) {
        gemv_kn(xp, xs, M, static_cast<const float*>(p.w), K, p.N, n0, n1, po, os, p.bias, accumulate);
      } else if (p.type == at::kFloat) {
        gemv_nk(xp, xs, M, static_cast<const float*>(p.w), K, n0, n1, po, os, p.scale, p.bias, accumulate);
      } else if (p.type == at::kBFloat16) {
        gemv_nk(xp, xs, M, static_cast<const uint16_t*>(p.w), K, n0, n1, po, os, p.scale, p.bias, accumulate);
      } else {
        gemv_nk(xp, xs, M, static_cast<const int8_t*>(p.w), K, n0, n1, po, os, p.scale, p.bias, accumulate);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("linear_into", &linear_into); }

}  // namespace pyengine::cpu
