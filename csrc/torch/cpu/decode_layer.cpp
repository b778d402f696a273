// CPU launcher for decode_layer: one whole pre-norm decoder layer of a decode step (LLaMA's), in ONE
// parallel region.
//
//   h = rms_norm(x) -> qkv = h W_qkv -> attention (RoPE, cache write, one query per row) -> x += attn W_o
//   h = rms_norm(x) -> gate|up = h W_gate|up -> gate = silu(gate) * up -> x += gate W_down
//
// The same plans and kernels as linear_into / rms_norm_into / decode_attention (decode_plan.h), so the
// same results; what changes is the threading. Called op by op, a batch-1 step of SmolLM2-135M is ~150
// dispatches and as many fork/joins, each a few microseconds against products of 20-100 us: ~15% of the
// step. Here the team forks once per layer and meets at a barrier between phases, and each thread takes
// the same contiguous share of every product as at::parallel_for would give it.
#include <omp.h>

#include "decode_plan.h"

namespace pyengine::cpu {
namespace {

// float32 [M, E] with unit inner stride.
void rows_arg(const at::Tensor& t, int64_t M, int64_t E, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.stride(1) == 1 &&
                  t.size(0) == M && t.size(1) == E,
              "pyengine::decode_layer: ", name, " must be a float32 CPU [", M, ", ", E,
              "] tensor with unit inner stride, got ", t.scalar_type(), " ", t.sizes(), " strides ", t.strides());
}

void decode_layer(at::Tensor& x, at::Tensor& h, at::Tensor& qkv, at::Tensor& attn, at::Tensor& gate_up,
                  const at::Tensor& norm_in, const at::Tensor& norm_post, double eps, at::TensorList qkv_w,
                  at::TensorList qkv_s, at::TensorList qkv_b, at::TensorList o_w, at::TensorList o_s,
                  at::TensorList o_b, at::TensorList gate_up_w, at::TensorList gate_up_s, at::TensorList gate_up_b,
                  at::TensorList down_w, at::TensorList down_s, at::TensorList down_b, at::Tensor& key_cache,
                  at::Tensor& value_cache, const c10::optional<at::Tensor>& cos, const c10::optional<at::Tensor>& sin,
                  const at::Tensor& positions, int64_t length, const c10::optional<at::Tensor>& key_mask,
                  int64_t num_heads, double scale, const c10::optional<at::Tensor>& rows) {
  const char* op = "decode_layer";
  TORCH_CHECK(x.dim() == 2, "pyengine::decode_layer: x must be [B, E], got ", x.sizes());
  const int64_t B = x.size(0), E = x.size(1);
  rows_arg(x, B, E, "x");
  rows_arg(h, B, E, "h");
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(1) % 2 == 0, "pyengine::decode_layer: gate_up must be [B, 2 * I]");
  const int64_t I = gate_up.size(1) / 2;
  rows_arg(gate_up, B, 2 * I, "gate_up");
  for (const at::Tensor* w : {&norm_in, &norm_post})
    TORCH_CHECK(w->scalar_type() == at::kFloat && w->is_contiguous() && w->numel() == E,
                "pyengine::decode_layer: norm weights must be contiguous float32 [", E, "]");
  // Every check runs here, before the parallel region: nothing inside it can throw.
  const LinearPlan qkv_plan(qkv, h, qkv_w, qkv_s, qkv_b, false, false, op);
  const AttentionPlan attention(attn, qkv, key_cache, value_cache, cos, sin, positions, length, key_mask, num_heads,
                                scale, rows, op);
  const LinearPlan o_plan(x, attn, o_w, o_s, o_b, true, false, op);
  const LinearPlan gate_up_plan(gate_up, h, gate_up_w, gate_up_s, gate_up_b, false, false, op);
  at::Tensor gate = gate_up.narrow(1, 0, I);  // [B, I] with row stride 2I: silu(gate) * up lands here
  const LinearPlan down_plan(x, gate, down_w, down_s, down_b, true, false, op);

  float* xp = x.mutable_data_ptr<float>();
  float* hp = h.mutable_data_ptr<float>();
  float* gp = gate_up.mutable_data_ptr<float>();
  const float* w_in = norm_in.const_data_ptr<float>();
  const float* w_post = norm_post.const_data_ptr<float>();
  const int64_t xs = x.stride(0), hs = h.stride(0), gs = gate_up.stride(0);
  const float e = static_cast<float>(eps);
  const int threads = static_cast<int>(std::max<int64_t>(1, at::get_num_threads()));
#pragma omp parallel num_threads(threads)
  {
    const int64_t tid = omp_get_thread_num(), team = omp_get_num_threads();
    auto share = [&](int64_t n, auto&& work) {  // this thread's contiguous share of [0, n)
      const int64_t per = (n + team - 1) / team, lo = std::min(n, tid * per), hi = std::min(n, lo + per);
      if (lo < hi) work(lo, hi);
    };
    auto norm = [&](const float* w) {
      share(B, [&](int64_t m0, int64_t m1) {
        for (int64_t m = m0; m < m1; ++m) rms_norm_row(xp + m * xs, w, E, e, hp + m * hs);
      });
    };
    std::vector<float> scores(attention.positions()), q(attention.head_dim());

    norm(w_in);
#pragma omp barrier
    share(qkv_plan.items(), [&](int64_t a, int64_t b) { qkv_plan.run(a, b); });
#pragma omp barrier
#pragma omp single
    attention.write_new();  // (the implicit barrier of `single` follows)
    share(attention.items(), [&](int64_t a, int64_t b) { attention.run(a, b, scores.data(), q.data()); });
#pragma omp barrier
    share(o_plan.items(), [&](int64_t a, int64_t b) { o_plan.run(a, b); });
#pragma omp barrier
    norm(w_post);
#pragma omp barrier
    share(gate_up_plan.items(), [&](int64_t a, int64_t b) { gate_up_plan.run(a, b); });
#pragma omp barrier
    share(B, [&](int64_t m0, int64_t m1) {  // gate = silu(gate) * up, row by row
      for (int64_t m = m0; m < m1; ++m) silu_mul(gp + m * gs, gp + m * gs + I, I);
    });
#pragma omp barrier
    share(down_plan.items(), [&](int64_t a, int64_t b) { down_plan.run(a, b); });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("decode_layer", &decode_layer); }

}  // namespace pyengine::cpu
