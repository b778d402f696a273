// CPU launcher for top_logits: each row's top k logits exactly, -inf elsewhere, through an int8 screen of
// the LM head (kernel and bound: csrc/include/pyengine/top_logits.h; reference:
// pyengine/backends/torch/decode.py, top_logits_reference).
//
// Two phases: the int8 product of every row into `out` (linear_into's plan: each thread streams its own
// columns of the copy), then the screen row by row (rows in parallel) recomputing the candidates from the
// exact head. Returns the number of candidates over all rows.
#include "decode_plan.h"
#include "pyengine/top_logits.h"

namespace pyengine::cpu {
namespace {

int64_t top_logits(at::Tensor& out, const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale,
                   const at::Tensor& slack, const at::Tensor& weight, int64_t k) {
  const char* op = "top_logits";
  TORCH_CHECK(k >= 1, "pyengine::", op, ": k must be >= 1, got ", k);
  TORCH_CHECK(q.scalar_type() == at::kChar, "pyengine::", op, ": q must be the int8 copy of the head, got ",
              q.scalar_type());
  TORCH_CHECK(weight.device().is_cpu() && weight.dim() == 2 && weight.is_contiguous() &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "pyengine::", op, ": weight must be the contiguous float32 or bfloat16 [N, K] head, got ",
              weight.scalar_type(), " ", weight.sizes());
  TORCH_CHECK(q.sizes() == weight.sizes(), "pyengine::", op, ": q ", q.sizes(), " and weight ", weight.sizes(),
              " must have the same shape");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(slack.scalar_type() == at::kFloat && slack.is_contiguous() && slack.numel() == N, "pyengine::", op,
              ": slack must be a contiguous [", N, "] float32 tensor");
  const LinearPlan approx(out, x, {q}, {scale}, {}, false, false, op);  // checks x, out, scale
  at::parallel_for(0, approx.items(), approx.grain(), [&](int64_t c0, int64_t c1) { approx.run(c0, c1); });

  const int64_t M = x.size(0);
  std::vector<int64_t> kept(M, 0);
  const float* xp = x.const_data_ptr<float>();
  const float* sp = slack.const_data_ptr<float>();
  float* op_ = out.mutable_data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
    TopLogitsScratch scratch;
    for (int64_t m = m0; m < m1; ++m) {
      float* row = op_ + m * out.stride(0);
      const float* xm = xp + m * x.stride(0);
      kept[m] = weight.scalar_type() == at::kFloat
                    ? top_logits_row(xm, weight.const_data_ptr<float>(), sp, N, K, k, row, scratch)
                    : top_logits_row(xm, static_cast<const uint16_t*>(weight.const_data_ptr()), sp, N, K, k, row,
                                     scratch);
    }
  });
  int64_t total = 0;
  for (int64_t c : kept) total += c;
  return total;
}

// The int8 screen of a head [N, K] (float32 or bf16): rows in parallel, one pass each (screen_row).
std::tuple<at::Tensor, at::Tensor, at::Tensor> top_logits_screen(const at::Tensor& weight) {
  TORCH_CHECK(weight.device().is_cpu() && weight.dim() == 2 &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "pyengine::top_logits_screen: weight must be a float32 or bfloat16 [N, K] CPU tensor, got ",
              weight.scalar_type(), " ", weight.sizes());
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  at::Tensor q = at::empty({N, K}, w.options().dtype(at::kChar));
  at::Tensor scale = at::empty({N}, w.options().dtype(at::kFloat));
  at::Tensor slack = at::empty({N}, w.options().dtype(at::kFloat));
  int8_t* qp = q.mutable_data_ptr<int8_t>();
  float* sp = scale.mutable_data_ptr<float>();
  float* lp = slack.mutable_data_ptr<float>();
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      if (w.scalar_type() == at::kFloat)
        screen_row(w.const_data_ptr<float>() + n * K, K, qp + n * K, sp + n, lp + n);
      else
        screen_row(static_cast<const uint16_t*>(w.const_data_ptr()) + n * K, K, qp + n * K, sp + n, lp + n);
    }
  });
  return {q, scale, slack};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("top_logits", &top_logits);
  m.impl("top_logits_screen", &top_logits_screen);
}

}  // namespace pyengine::cpu
