// CPU launchers for the rest of a decode step: rms_norm_into, layer_norm_into, decode_attention
// (kernels: csrc/include/pyengine/decode.h). All write into caller-owned buffers.
#include <vector>

#include "common.h"
#include "pyengine/decode.h"

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
  const char* op = "decode_attention";
  rows_arg(qkv, op, "qkv");
  rows_arg(out, op, "out");
  for (const at::Tensor* c : {&key_cache, &value_cache})
    TORCH_CHECK(c->device().is_cpu() && c->scalar_type() == at::kFloat && c->dim() == 4 && c->is_contiguous(),
                "pyengine::", op, ": caches must be contiguous float32 [B, H_kv, T_max, D]");
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes(), "pyengine::", op, ": key and value caches differ in shape");
  const int64_t B = key_cache.size(0), Hkv = key_cache.size(1), Tmax = key_cache.size(2), D = key_cache.size(3);
  const int64_t H = num_heads;
  TORCH_CHECK(H > 0 && H % Hkv == 0, "pyengine::", op, ": num_heads ", H, " must be a multiple of H_kv ", Hkv);
  TORCH_CHECK(qkv.size(0) == B && qkv.size(1) == (H + 2 * Hkv) * D, "pyengine::", op, ": qkv must be [", B, ", ",
              (H + 2 * Hkv) * D, "], got ", qkv.sizes());
  TORCH_CHECK(out.size(0) == B && out.size(1) == H * D, "pyengine::", op, ": out must be [", B, ", ", H * D, "]");
  TORCH_CHECK(length >= 0 && length < Tmax, "pyengine::", op, ": position ", length, " is outside a cache of ", Tmax,
              " positions; grow the cache first");
  const int64_t T = length + 1;
  const bool rope = cos.has_value();
  TORCH_CHECK(rope == sin.has_value(), "pyengine::", op, ": pass both cos and sin, or neither");
  at::Tensor pos;
  const float *cp = nullptr, *sp = nullptr;
  if (rope) {
    TORCH_CHECK(cos->is_contiguous() && sin->is_contiguous() && cos->scalar_type() == at::kFloat &&
                    cos->dim() == 2 && cos->size(1) == D && cos->sizes() == sin->sizes(),
                "pyengine::", op, ": cos/sin must be contiguous float32 [positions, ", D, "]");
    pos = per_row_arg(positions, B, at::kLong, op, "positions");
    const int64_t* pp = pos.const_data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      TORCH_CHECK(pp[b] >= 0 && pp[b] < cos->size(0), "pyengine::", op, ": position ", pp[b],
                  " is outside the RoPE table of ", cos->size(0), " rows");
    cp = cos->const_data_ptr<float>();
    sp = sin->const_data_ptr<float>();
  }
  at::Tensor mask;
  if (key_mask.has_value()) {
    mask = *key_mask;
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == T && mask.stride(1) == 1 &&
                    (mask.scalar_type() == at::kLong || mask.scalar_type() == at::kBool),
                "pyengine::", op, ": key_mask must be int64 or bool [", B, ", ", T, "] with unit inner stride, got ",
                mask.scalar_type(), " ", mask.sizes());
  }
  // Beam row table: position t < length of row b lives in cache row rows[b, t] (KVCache.reorder without
  // copies); the new position `length` is written to row b itself.
  at::Tensor table;
  if (rows.has_value()) {
    table = *rows;
    TORCH_CHECK(table.scalar_type() == at::kLong && table.dim() == 2 && table.size(0) == B &&
                    table.size(1) >= length && table.stride(1) == 1,
                "pyengine::", op, ": rows must be int64 [", B, ", >= ", length, "] with unit inner stride, got ",
                table.scalar_type(), " ", table.sizes());
    for (int64_t b = 0; b < B; ++b) {
      const int64_t* r = table.const_data_ptr<int64_t>() + b * table.stride(0);
      for (int64_t t = 0; t < length; ++t)
        TORCH_CHECK(r[t] >= 0 && r[t] < B, "pyengine::", op, ": rows[", b, ", ", t, "] = ", r[t],
                    " is not a row of a batch of ", B);
    }
  }
  const float* q_all = qkv.const_data_ptr<float>();
  float* kc = key_cache.mutable_data_ptr<float>();
  float* vc = value_cache.mutable_data_ptr<float>();
  const int64_t qs = qkv.stride(0);
  // 1. the new key (rotated) and value of every row and kv head go to cache position `length`.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < Hkv; ++g) {
      const float* k = q_all + b * qs + (H + g) * D;
      const float* v = q_all + b * qs + (H + Hkv + g) * D;
      float* kdst = kc + ((b * Hkv + g) * Tmax + length) * D;
      float* vdst = vc + ((b * Hkv + g) * Tmax + length) * D;
      if (rope) {
        const int64_t p = pos.const_data_ptr<int64_t>()[b];
        rope_head(k, cp + p * D, sp + p * D, D, kdst);
      } else {
        std::copy(k, k + D, kdst);
      }
      std::copy(v, v + D, vdst);
    }
  // 2. every (row, query head) attends over positions [0, T).
  const int64_t groups = H / Hkv;
  // A head over a short cache is a few microseconds of work: split heads between threads only in batches
  // (each parallel region is a fork/join, costly on a busy machine).
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(T * D, 1));
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, B * H, grain, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(T), q(D);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H, g = h / groups;
      const float* qh = q_all + b * qs + h * D;
      if (rope) {
        const int64_t p = pos.const_data_ptr<int64_t>()[b];
        rope_head(qh, cp + p * D, sp + p * D, D, q.data());
        qh = q.data();
      }
      float* oh = o + b * out.stride(0) + h * D;
      const float sc = static_cast<float>(scale);
      // Position t of this row: its own cache row, or the one the row table names (the newest is its own).
      const int64_t* r = table.defined() ? table.const_data_ptr<int64_t>() + b * table.stride(0) : nullptr;
      auto position = [&](const float* cache, int64_t t) {
        const int64_t row = r && t < length ? r[t] : b;
        return cache + ((row * Hkv + g) * Tmax + t) * D;
      };
      auto key = [&](int64_t t) { return position(kc, t); };
      auto value = [&](int64_t t) { return position(vc, t); };
      if (!mask.defined()) {
        attend_one(qh, key, value, T, D, sc, [](int64_t) { return true; }, scores.data(), oh);
      } else if (mask.scalar_type() == at::kLong) {
        const int64_t* mrow = mask.const_data_ptr<int64_t>() + b * mask.stride(0);
        attend_one(qh, key, value, T, D, sc, [&](int64_t t) { return mrow[t] != 0; }, scores.data(), oh);
      } else {
        const bool* mrow = mask.const_data_ptr<bool>() + b * mask.stride(0);
        attend_one(qh, key, value, T, D, sc, [&](int64_t t) { return mrow[t]; }, scores.data(), oh);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("rms_norm_into", &rms_norm_into);
  m.impl("layer_norm_into", &layer_norm_into);
  m.impl("decode_attention", &decode_attention);
}

}  // namespace pyengine::cpu
