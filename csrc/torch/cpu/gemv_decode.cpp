// CPU launchers for the rest of a decode step: rms_norm_into, layer_norm_into, decode_attention
// (kernels: csrc/include/pyengine/decode.h). All write into caller-owned buffers.
#include <vector>

#include "decode_plan.h"

namespace pyengine::cpu {
namespace {

// [M, E] float32 with unit inner stride.
void rows_arg(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.stride(1) == 1, "pyengine::",
              op, ": ", name, " must be a float32 CPU [rows, features] tensor with unit inner stride, got ",
              t.scalar_type(), " ", t.sizes(), " strides ", t.strides());
}

void norm_into(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias, double eps,
               bool rms, const char* op) {
  rows_arg(x, op, "x");
  rows_arg(out, op, "out");
  const int64_t M = x.size(0), E = x.size(1);
  TORCH_CHECK(out.size(0) == M && out.size(1) == E, "pyengine::", op, ": out ", out.sizes(), " must match x ", x.sizes());
  const at::Tensor w = weight.contiguous();
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.numel() == E, "pyengine::", op, ": weight must be [", E, "] float32");
  at::Tensor b;
  if (bias) {
    b = bias->contiguous();
    TORCH_CHECK(b.scalar_type() == at::kFloat && b.numel() == E, "pyengine::", op, ": bias must be [", E, "] float32");
  }
  const float* xp = x.const_data_ptr<float>();
  const float* wp = w.const_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(M, E, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      if (rms)
        rms_norm_row(xp + m * x.stride(0), wp, E, static_cast<float>(eps), o + m * out.stride(0));
      else
        layer_norm_row(xp + m * x.stride(0), wp, bp, E, static_cast<float>(eps), o + m * out.stride(0));
    }
  });
}

void rms_norm_into(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  norm_into(out, x, weight, nullptr, eps, true, "rms_norm_into");
}

void layer_norm_into(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                     double eps) {
  norm_into(out, x, weight, &bias, eps, false, "layer_norm_into");
}

void decode_attention(at::Tensor& out, const at::Tensor& qkv, at::Tensor& key_cache, at::Tensor& value_cache,
                      const c10::optional<at::Tensor>& cos, const c10::optional<at::Tensor>& sin,
                      const at::Tensor& positions, int64_t length, const c10::optional<at::Tensor>& key_mask,
                      int64_t num_heads, double scale, const c10::optional<at::Tensor>& rows) {
  const AttentionPlan plan(out, qkv, key_cache, value_cache, cos, sin, positions, length, key_mask, num_heads, scale,
                           rows, "decode_attention");
  plan.write_new();
  at::parallel_for(0, plan.items(), plan.grain(), [&](int64_t i0, int64_t i1) {
    AttentionScratch scratch = plan.scratch();
    plan.run(i0, i1, scratch);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("rms_norm_into", &rms_norm_into);
  m.impl("layer_norm_into", &layer_norm_into);
  m.impl("decode_attention", &decode_attention);
}

}  // namespace pyengine::cpu
