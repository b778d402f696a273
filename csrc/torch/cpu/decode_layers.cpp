// CPU launcher for decode_layers: the pre-norm decoder layers of a decode step, one after the other, in ONE
// parallel region. Per layer, LLaMA's (RMSNorm, SiLU-gated MLP, RoPE) or GPT-2's (LayerNorm with bias, GELU
// MLP, no RoPE):
//
//   h = norm(x) -> qkv = h W_qkv -> attention (RoPE, cache write, one query per row) -> x += attn W_o
//   h = norm(x) -> gate|up = h W_gate|up -> gate = silu(gate) * up -> x += gate W_down     ("silu_mul")
//              or ff = h W_fc -> ff = gelu_tanh(ff) -> x += ff W_proj                     ("gelu_tanh")
//
// The same plans and kernels as linear_into / rms_norm_into / layer_norm_into / decode_attention
// (decode_plan.h), so the same results; what changes is the threading. Called op by op, a batch-1 step of
// SmolLM2-135M is ~150 dispatches and as many fork/joins, each a few microseconds against products of
// 20-100 us. Called once per layer, the second thread still sat idle through every return to Python
// between layers (a perf profile of a batch-1 step: 26% of its samples in libgomp's wait). Here the team
// forks once per step and meets at a barrier between phases; each thread takes the same contiguous share
// of every product as at::parallel_for would give it (a shared work counter was tried: 6% slower, the
// streams broke up).
#include <omp.h>

#include "decode_plan.h"

namespace pyengine::cpu {
namespace {

constexpr const char* kOp = "decode_layers";

// float32 [M, E] with unit inner stride.
void rows_arg(const at::Tensor& t, int64_t M, int64_t E, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.stride(1) == 1 &&
                  t.size(0) == M && t.size(1) == E,
              "pyengine::decode_layers: ", name, " must be a float32 CPU [", M, ", ", E,
              "] tensor with unit inner stride, got ", t.scalar_type(), " ", t.sizes(), " strides ", t.strides());
}

// Layer i's part of a list holding every layer's entries back to back (an empty list stays empty).
at::TensorList layer_part(at::TensorList all, int64_t layers, int64_t i, const char* name) {
  TORCH_CHECK(all.size() % layers == 0, "pyengine::decode_layers: ", name, " holds ", all.size(),
              " tensors, not the same number for each of ", layers, " layers");
  const int64_t per = static_cast<int64_t>(all.size()) / layers;
  return all.slice(i * per, per);
}

// One layer's validated work.
struct LayerPlan {
  LinearPlan qkv, o, gate_up, down;
  AttentionPlan attention;
  const float *norm_in, *norm_post;
  const float *norm_in_b, *norm_post_b;  // LayerNorm's biases, or null: RMSNorm
};

void decode_layers(at::Tensor& x, at::Tensor& h, at::Tensor& qkv, at::Tensor& attn, at::Tensor& gate_up,
                   at::TensorList norm_in, at::TensorList norm_post, at::TensorList norm_in_b,
                   at::TensorList norm_post_b, double eps, c10::string_view activation, bool weight_kn,
                   at::TensorList qkv_w,
                   at::TensorList qkv_s, at::TensorList qkv_b, at::TensorList o_w, at::TensorList o_s,
                   at::TensorList o_b, at::TensorList gate_up_w, at::TensorList gate_up_s,
                   at::TensorList gate_up_b, at::TensorList down_w, at::TensorList down_s, at::TensorList down_b,
                   at::TensorList key_cache, at::TensorList value_cache, const c10::optional<at::Tensor>& cos,
                   const c10::optional<at::Tensor>& sin, const at::Tensor& positions, int64_t length,
                   const c10::optional<at::Tensor>& key_mask, int64_t num_heads, at::ArrayRef<double> scale,
                   const c10::optional<at::Tensor>& rows, const c10::optional<at::Tensor>& block_table,
                   const c10::optional<at::Tensor>& context_lens, const c10::optional<at::Tensor>& write_slots) {
  const int64_t L = static_cast<int64_t>(norm_in.size());
  TORCH_CHECK(L > 0, "pyengine::decode_layers: pass at least one layer");
  TORCH_CHECK(static_cast<int64_t>(norm_post.size()) == L && static_cast<int64_t>(key_cache.size()) == L &&
                  static_cast<int64_t>(value_cache.size()) == L && static_cast<int64_t>(scale.size()) == L,
              "pyengine::decode_layers: norm_in, norm_post, key_cache, value_cache and scale need one entry per "
              "layer; got ", L, ", ", norm_post.size(), ", ", key_cache.size(), ", ", value_cache.size(), " and ",
              scale.size());
  TORCH_CHECK(x.dim() == 2, "pyengine::decode_layers: x must be [B, E], got ", x.sizes());
  const int64_t B = x.size(0), E = x.size(1);
  rows_arg(x, B, E, "x");
  rows_arg(h, B, E, "h");
  const bool gated = activation == "silu_mul";
  TORCH_CHECK(gated || activation == "gelu_tanh", "pyengine::decode_layers: activation must be \"silu_mul\" or "
              "\"gelu_tanh\", got \"", std::string(activation), "\"");
  TORCH_CHECK(gate_up.dim() == 2 && (!gated || gate_up.size(1) % 2 == 0), "pyengine::decode_layers: gate_up must be ",
              gated ? "[B, 2 * I]" : "[B, I]", ", got ", gate_up.sizes());
  const int64_t I = gated ? gate_up.size(1) / 2 : gate_up.size(1);
  rows_arg(gate_up, B, gate_up.size(1), "gate_up");
  at::Tensor gate = gate_up.narrow(1, 0, I);  // [B, I]: silu(gate) * up or gelu(ff) lands here, down reads it
  const bool layer_norm = !norm_in_b.empty();
  TORCH_CHECK(norm_in_b.size() == (layer_norm ? norm_in.size() : 0) && norm_post_b.size() == norm_in_b.size(),
              "pyengine::decode_layers: norm_in_b and norm_post_b must both be empty (RMSNorm) or hold one bias per "
              "layer (LayerNorm)");
  // The batch engine's paged pools instead of KVCache layers: all three of its tensors, or none.
  const int given = block_table.has_value() + context_lens.has_value() + write_slots.has_value();
  TORCH_CHECK(given == 0 || given == 3, "pyengine::decode_layers: pass block_table, context_lens and write_slots "
              "together (the paged layout), or none of them");
  c10::optional<PagedRows> paged;
  if (given == 3) paged = PagedRows{*block_table, *context_lens, *write_slots};
  // Every check runs here, before the parallel region: nothing inside it can throw.
  std::vector<LayerPlan> plan;
  plan.reserve(L);
  for (int64_t i = 0; i < L; ++i) {
    std::vector<const at::Tensor*> norms{&norm_in[i], &norm_post[i]};
    if (layer_norm) norms.insert(norms.end(), {&norm_in_b[i], &norm_post_b[i]});
    for (const at::Tensor* w : norms)
      TORCH_CHECK(w->device().is_cpu() && w->scalar_type() == at::kFloat && w->is_contiguous() && w->numel() == E,
                  "pyengine::decode_layers: norm weights must be contiguous float32 [", E, "], layer ", i, " has ",
                  w->scalar_type(), " ", w->sizes());
    auto part = [&](at::TensorList all, const char* name) { return layer_part(all, L, i, name); };
    at::Tensor& keys = const_cast<at::Tensor&>(key_cache[i]);  // written in place (the schema's alias)
    at::Tensor& values = const_cast<at::Tensor&>(value_cache[i]);
    const bool kn = weight_kn;
    plan.push_back(LayerPlan{
        LinearPlan(qkv, h, part(qkv_w, "qkv_w"), part(qkv_s, "qkv_s"), part(qkv_b, "qkv_b"), false, kn, kOp),
        LinearPlan(x, attn, part(o_w, "o_w"), part(o_s, "o_s"), part(o_b, "o_b"), true, kn, kOp),
        LinearPlan(gate_up, h, part(gate_up_w, "gate_up_w"), part(gate_up_s, "gate_up_s"),
                   part(gate_up_b, "gate_up_b"), false, kn, kOp),
        LinearPlan(x, gate, part(down_w, "down_w"), part(down_s, "down_s"), part(down_b, "down_b"), true, kn, kOp),
        AttentionPlan(attn, qkv, keys, values, cos, sin, positions, length, key_mask, num_heads, scale[i], rows, kOp,
                      paged ? &*paged : nullptr),
        norm_in[i].const_data_ptr<float>(), norm_post[i].const_data_ptr<float>(),
        layer_norm ? norm_in_b[i].const_data_ptr<float>() : nullptr,
        layer_norm ? norm_post_b[i].const_data_ptr<float>() : nullptr});
  }

  float* xp = x.mutable_data_ptr<float>();
  float* hp = h.mutable_data_ptr<float>();
  float* gp = gate_up.mutable_data_ptr<float>();
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
    auto product = [&](const LinearPlan& p) { share(p.items(), [&](int64_t a, int64_t b) { p.run(a, b); }); };
    auto norm = [&](const float* w, const float* b) {
      share(B, [&](int64_t m0, int64_t m1) {
        for (int64_t m = m0; m < m1; ++m) {
          if (b)
            layer_norm_row(xp + m * xs, w, b, E, e, hp + m * hs);
          else
            rms_norm_row(xp + m * xs, w, E, e, hp + m * hs);
        }
      });
    };
    AttentionScratch scratch = plan[0].attention.scratch();

    for (const LayerPlan& layer : plan) {
      norm(layer.norm_in, layer.norm_in_b);
#pragma omp barrier
      product(layer.qkv);
#pragma omp barrier
#pragma omp single
      layer.attention.write_new();  // (the implicit barrier of `single` follows)
      share(layer.attention.items(), [&](int64_t a, int64_t b) { layer.attention.run(a, b, scratch); });
#pragma omp barrier
      product(layer.o);
#pragma omp barrier
      norm(layer.norm_post, layer.norm_post_b);
#pragma omp barrier
      product(layer.gate_up);
#pragma omp barrier
      share(B, [&](int64_t m0, int64_t m1) {  // gate = silu(gate) * up, or gelu(ff), row by row
        for (int64_t m = m0; m < m1; ++m) {
          if (gated)
            silu_mul(gp + m * gs, gp + m * gs + I, I);
          else
            gelu_tanh(gp + m * gs, I);
        }
      });
#pragma omp barrier
      product(layer.down);
#pragma omp barrier
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("decode_layers", &decode_layers); }

}  // namespace pyengine::cpu
