// Validated work plans of the decode-step ops, shared by their launchers and by decode_layer.
//
// A plan checks its tensors once (TORCH_CHECK, naming the op and the argument) and then exposes the work
// as numbered items a caller hands to threads however it likes: linear_into and decode_attention use
// at::parallel_for (one fork/join per op); decode_layer runs a whole layer's items inside ONE OpenMP
// parallel region with a barrier between phases. Same items, same kernels, same results.
#pragma once

#include <vector>

#include "common.h"
#include "pyengine/decode.h"
#include "pyengine/gemv.h"
#include "pyengine/paged_attention.h"

namespace pyengine::cpu {

// out[m, n] = (accumulate ? out[m, n] : 0) + bias[n] + scale[n] * (x[m] . w[n]) over a list of weights
// whose output columns lie side by side in `out`. Items: 16-column chunks of every weight, in output order,
// so each thread streams its own slice of every matrix (consecutive chunks run as one column range).
class LinearPlan {
 public:
  LinearPlan(at::Tensor& out, const at::Tensor& x, at::TensorList weights, at::TensorList scales,
             at::TensorList biases, bool accumulate, bool weight_kn, const char* op)
      : accumulate_(accumulate), weight_kn_(weight_kn) {
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
    M_ = x.size(0);
    K_ = x.size(1);
    int64_t N = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor& w = weights[i];
      TORCH_CHECK(w.device().is_cpu() && w.dim() == 2 && w.is_contiguous(), "pyengine::", op,
                  ": every weight must be a contiguous 2-D CPU tensor");
      const auto t = w.scalar_type();
      TORCH_CHECK(t == at::kFloat || (!weight_kn && (t == at::kBFloat16 || t == at::kChar)), "pyengine::", op,
                  ": weights must be float32, or bfloat16 / int8 in the [N, K] layout; got ", t);
      const int64_t n = weight_kn ? w.size(1) : w.size(0);
      TORCH_CHECK((weight_kn ? w.size(0) : w.size(1)) == K_, "pyengine::", op, ": weight ", w.sizes(),
                  (weight_kn ? " [K, N]" : " [N, K]"), " does not match x's K = ", K_);
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
      parts_.push_back(p);
      N += n;
    }
    TORCH_CHECK(out.dim() == 2 && out.size(0) == M_ && out.size(1) == N && out.stride(1) == 1, "pyengine::", op,
                ": out must be [", M_, ", ", N, "] with unit inner stride, got ", out.sizes());
    if (M_ > 0)
      for (size_t i = 0; i < parts_.size(); ++i)
        for (int64_t n = 0; n < parts_[i].N; n += kChunk) chunks_.emplace_back(static_cast<int>(i), n);
    N_ = N;
    xp_ = x.const_data_ptr<float>();
    o_ = out.mutable_data_ptr<float>();
    xs_ = x.stride(0);
    os_ = out.stride(0);
  }

  int64_t items() const { return static_cast<int64_t>(chunks_.size()); }
  // Below ~64k weights a thread wake-up costs more than the product itself.
  int64_t grain() const { return N_ * K_ < (1 << 16) ? std::max<int64_t>(items(), 1) : 1; }

  // Items [c0, c1): consecutive chunks of one weight run as one column range.
  void run(int64_t c0, int64_t c1) const {
    for (int64_t c = c0; c < c1;) {
      const Part& p = parts_[chunks_[c].first];
      const int64_t n0 = chunks_[c].second;
      int64_t n1 = std::min(p.N, n0 + kChunk);
      for (++c; c < c1 && chunks_[c].first == chunks_[c - 1].first; ++c) n1 = std::min(p.N, chunks_[c].second + kChunk);
      float* po = o_ + p.offset;
      if (weight_kn_) {
        gemv_kn(xp_, xs_, M_, static_cast<const float*>(p.w), K_, p.N, n0, n1, po, os_, p.bias, accumulate_);
      } else if (p.type == at::kFloat) {
        gemv_nk(xp_, xs_, M_, static_cast<const float*>(p.w), K_, n0, n1, po, os_, p.scale, p.bias, accumulate_);
      } else if (p.type == at::kBFloat16) {
        gemv_nk(xp_, xs_, M_, static_cast<const uint16_t*>(p.w), K_, n0, n1, po, os_, p.scale, p.bias, accumulate_);
      } else {
        gemv_nk(xp_, xs_, M_, static_cast<const int8_t*>(p.w), K_, n0, n1, po, os_, p.scale, p.bias, accumulate_);
      }
    }
  }

 private:
  // 16: a 576-wide output (SmolLM2's o and down) splits 288/288 columns between two threads; 64-column chunks
  // split it 5/4, and the thread with less to do waited ~11% of those products at the barrier.
  static constexpr int64_t kChunk = 16;
  struct Part {
    const void* w;
    at::ScalarType type;
    const float* scale;
    const float* bias;
    int64_t N, offset;
  };
  std::vector<Part> parts_;
  std::vector<std::pair<int, int64_t>> chunks_;  // (part, first column within the part)
  bool accumulate_, weight_kn_;
  int64_t M_ = 0, K_ = 0, N_ = 0, xs_ = 0, os_ = 0;
  const float* xp_ = nullptr;
  float* o_ = nullptr;
};

// Per-thread scratch of AttentionPlan::run.
struct AttentionScratch {
  std::vector<float> scores, q;  // G * T, G * D
  std::vector<int64_t> off;      // T
};

// One query per row over a [B, H_kv, T_max, D] KVCache layer: RoPE on q and the new k, the new k/v written
// at position `length`, then attention over positions [0, length]. Items: the B * H_kv (row, kv head) pairs,
// after `write_new()`; an item runs the G = H / H_kv query heads of its group together with the batch
// engine's kernel (attend_rows: 16 keys per transpose-and-add tree, vector softmax, each key and value row
// read once for the group). Hidden positions of the padding mask are left out of the list it reads.
// The batch engine's paged layout instead (PagedKVCache, pyengine/batch/paged_cache.py): pools
// [N, P, H_kv, D], row b's position j in block table[b, j / P] slot j % P, its context_lens[b] positions
// including the new one, which goes to flat slot write_slots[b] (= block * P + slot).
struct PagedRows {
  at::Tensor table, context_lens, write_slots;  // int64 [B, blocks], [B], [B]
};

class AttentionPlan {
 public:
  AttentionPlan(at::Tensor& out, const at::Tensor& qkv, at::Tensor& key_cache, at::Tensor& value_cache,
                const c10::optional<at::Tensor>& cos, const c10::optional<at::Tensor>& sin,
                const at::Tensor& positions, int64_t length, const c10::optional<at::Tensor>& key_mask,
                int64_t num_heads, double scale, const c10::optional<at::Tensor>& rows, const char* op,
                const PagedRows* paged = nullptr)
      : length_(length), H_(num_heads), scale_(static_cast<float>(scale)) {
    TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == at::kFloat && qkv.dim() == 2 && qkv.stride(1) == 1,
                "pyengine::", op, ": qkv must be a float32 CPU [rows, features] tensor with unit inner stride, got ",
                qkv.scalar_type(), " ", qkv.sizes(), " strides ", qkv.strides());
    TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.dim() == 2 && out.stride(1) == 1,
                "pyengine::", op, ": out must be a float32 CPU [rows, features] tensor with unit inner stride, got ",
                out.scalar_type(), " ", out.sizes(), " strides ", out.strides());
    for (const at::Tensor* c : {&key_cache, &value_cache})
      TORCH_CHECK(c->device().is_cpu() && c->scalar_type() == at::kFloat && c->dim() == 4 && c->is_contiguous(),
                  "pyengine::", op, ": caches must be contiguous float32 ",
                  paged ? "[N, P, H_kv, D] pools" : "[B, H_kv, T_max, D]");
    TORCH_CHECK(key_cache.sizes() == value_cache.sizes(), "pyengine::", op, ": key and value caches differ in shape");
    if (paged) {
      TORCH_CHECK(!key_mask.has_value() && !rows.has_value(), "pyengine::", op,
                  ": the paged layout takes no key_mask or rows (block tables list each row's own positions)");
      B_ = qkv.size(0);
      P_ = key_cache.size(1);
      Hkv_ = key_cache.size(2);
      D_ = key_cache.size(3);
      check_paged(*paged, key_cache.size(0), op);
      Tmax_ = max_context_;
    } else {
      B_ = key_cache.size(0);
      Hkv_ = key_cache.size(1);
      Tmax_ = key_cache.size(2);
      D_ = key_cache.size(3);
    }
    TORCH_CHECK(H_ > 0 && H_ % Hkv_ == 0, "pyengine::", op, ": num_heads ", H_, " must be a multiple of H_kv ", Hkv_);
    TORCH_CHECK(qkv.size(0) == B_ && qkv.size(1) == (H_ + 2 * Hkv_) * D_, "pyengine::", op, ": qkv must be [", B_,
                ", ", (H_ + 2 * Hkv_) * D_, "], got ", qkv.sizes());
    TORCH_CHECK(out.size(0) == B_ && out.size(1) == H_ * D_, "pyengine::", op, ": out must be [", B_, ", ", H_ * D_,
                "]");
    TORCH_CHECK(paged || (length >= 0 && length < Tmax_), "pyengine::", op, ": position ", length,
                " is outside a cache of ", Tmax_, " positions; grow the cache first");
    rope_ = cos.has_value();
    TORCH_CHECK(rope_ == sin.has_value(), "pyengine::", op, ": pass both cos and sin, or neither");
    if (rope_) {
      TORCH_CHECK(cos->is_contiguous() && sin->is_contiguous() && cos->scalar_type() == at::kFloat &&
                      cos->dim() == 2 && cos->size(1) == D_ && cos->sizes() == sin->sizes(),
                  "pyengine::", op, ": cos/sin must be contiguous float32 [positions, ", D_, "]");
      pos_ = per_row_arg(positions, B_, at::kLong, op, "positions");
      const int64_t* pp = pos_.const_data_ptr<int64_t>();
      for (int64_t b = 0; b < B_; ++b)
        TORCH_CHECK(pp[b] >= 0 && pp[b] < cos->size(0), "pyengine::", op, ": position ", pp[b],
                    " is outside the RoPE table of ", cos->size(0), " rows");
      cp_ = cos->const_data_ptr<float>();
      sp_ = sin->const_data_ptr<float>();
    }
    const int64_t T = length + 1;
    if (key_mask.has_value()) {
      mask_ = *key_mask;
      TORCH_CHECK(mask_.dim() == 2 && mask_.size(0) == B_ && mask_.size(1) == T && mask_.stride(1) == 1 &&
                      (mask_.scalar_type() == at::kLong || mask_.scalar_type() == at::kBool),
                  "pyengine::", op, ": key_mask must be int64 or bool [", B_, ", ", T,
                  "] with unit inner stride, got ", mask_.scalar_type(), " ", mask_.sizes());
    }
    // Beam row table: position t < length of row b lives in cache row rows[b, t] (KVCache.reorder without
    // copies); the new position `length` is written to row b itself.
    if (rows.has_value()) {
      table_ = *rows;
      TORCH_CHECK(table_.scalar_type() == at::kLong && table_.dim() == 2 && table_.size(0) == B_ &&
                      table_.size(1) >= length && table_.stride(1) == 1,
                  "pyengine::", op, ": rows must be int64 [", B_, ", >= ", length,
                  "] with unit inner stride, got ", table_.scalar_type(), " ", table_.sizes());
      for (int64_t b = 0; b < B_; ++b) {
        const int64_t* r = table_.const_data_ptr<int64_t>() + b * table_.stride(0);
        for (int64_t t = 0; t < length; ++t)
          TORCH_CHECK(r[t] >= 0 && r[t] < B_, "pyengine::", op, ": rows[", b, ", ", t, "] = ", r[t],
                      " is not a row of a batch of ", B_);
      }
    }
    q_all_ = qkv.const_data_ptr<float>();
    qs_ = qkv.stride(0);
    kc_ = key_cache.mutable_data_ptr<float>();
    vc_ = value_cache.mutable_data_ptr<float>();
    o_ = out.mutable_data_ptr<float>();
    os_ = out.stride(0);
  }

  int64_t items() const { return B_ * Hkv_; }
  int64_t positions() const { return paged_ ? max_context_ : length_ + 1; }
  int64_t head_dim() const { return D_; }
  // A group over a short cache is a few microseconds of work: groups go to threads in batches.
  int64_t grain() const {
    return std::max<int64_t>(1, 65536 / std::max<int64_t>(positions() * D_ * (H_ / Hkv_), 1));
  }
  AttentionScratch scratch() const {
    const int64_t G = H_ / Hkv_, T = positions();
    return {std::vector<float>(G * T), std::vector<float>(G * D_), std::vector<int64_t>(T)};
  }

  // The new key (rotated) and value of every row and kv head, into cache position `length`.
  void write_new() const {
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t g = 0; g < Hkv_; ++g) {
        const float* k = q_all_ + b * qs_ + (H_ + g) * D_;
        const float* v = q_all_ + b * qs_ + (H_ + Hkv_ + g) * D_;
        const int64_t at = paged_ ? (slots_[b] * Hkv_ + g) * D_ : ((b * Hkv_ + g) * Tmax_ + length_) * D_;
        float* kdst = kc_ + at;
        float* vdst = vc_ + at;
        if (rope_) {
          const int64_t p = pos_.const_data_ptr<int64_t>()[b];
          rope_head(k, cp_ + p * D_, sp_ + p * D_, D_, kdst);
        } else {
          std::copy(k, k + D_, kdst);
        }
        std::copy(v, v + D_, vdst);
      }
  }

  // Items [i0, i1) after write_new().
  void run(int64_t i0, int64_t i1, AttentionScratch& scratch) const {
    const int64_t G = H_ / Hkv_;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / Hkv_, g = i % Hkv_;
      // Where position t of this row and kv head lives: its own cache row, or the one the beam row table
      // names (the newest is always its own); positions the padding mask hides are skipped.
      const int64_t* r = table_.defined() ? table_.const_data_ptr<int64_t>() + b * table_.stride(0) : nullptr;
      int64_t L = 0;
      if (paged_) {  // the row's blocks, in order
        const int64_t* blocks = blocks_ + b * block_stride_;
        for (int64_t t = 0; t < context_[b]; ++t) scratch.off[L++] = ((blocks[t / P_] * P_ + t % P_) * Hkv_ + g) * D_;
      } else {
        for (int64_t t = 0; t <= length_; ++t) {
          if (t < length_ && !visible(b, t)) continue;
          const int64_t row = r && t < length_ ? r[t] : b;
          scratch.off[L++] = ((row * Hkv_ + g) * Tmax_ + t) * D_;
        }
      }
      for (int64_t h = 0; h < G; ++h) {  // the group's queries, rotated, times the scale
        const float* qh = q_all_ + b * qs_ + (g * G + h) * D_;
        float* dst = scratch.q.data() + h * D_;
        if (rope_) {
          const int64_t p = pos_.const_data_ptr<int64_t>()[b];
          rope_head(qh, cp_ + p * D_, sp_ + p * D_, D_, dst);
        } else {
          std::copy(qh, qh + D_, dst);
        }
        for (int64_t d = 0; d < D_; ++d) dst[d] *= scale_;
      }
      attend_rows(kc_, vc_, scratch.off.data(), L, G, 1, D_, scratch.q.data(), o_ + b * os_ + g * G * D_, D_,
                  scratch.scores.data());
    }
  }

 private:
  void check_paged(const PagedRows& p, int64_t N, const char* op) {
    paged_ = true;
    TORCH_CHECK(p.table.scalar_type() == at::kLong && p.table.dim() == 2 && p.table.size(0) == B_ &&
                    p.table.stride(1) == 1,
                "pyengine::", op, ": block_table must be int64 [", B_, ", blocks] with unit inner stride, got ",
                p.table.scalar_type(), " ", p.table.sizes());
    context_t_ = per_row_arg(p.context_lens, B_, at::kLong, op, "context_lens");
    slots_t_ = per_row_arg(p.write_slots, B_, at::kLong, op, "write_slots");
    table_paged_ = p.table;
    blocks_ = table_paged_.const_data_ptr<int64_t>();
    block_stride_ = table_paged_.stride(0);
    context_ = context_t_.const_data_ptr<int64_t>();
    slots_ = slots_t_.const_data_ptr<int64_t>();
    for (int64_t b = 0; b < B_; ++b) {
      const int64_t ctx = context_[b];
      TORCH_CHECK(ctx >= 1 && ctx <= table_paged_.size(1) * P_, "pyengine::", op, ": context_lens[", b, "] = ", ctx,
                  " does not fit a block table of ", table_paged_.size(1), " blocks of ", P_);
      for (int64_t j = 0; j < (ctx + P_ - 1) / P_; ++j)
        TORCH_CHECK(blocks_[b * block_stride_ + j] >= 0 && blocks_[b * block_stride_ + j] < N, "pyengine::", op,
                    ": block_table[", b, ", ", j, "] = ", blocks_[b * block_stride_ + j], " is not a block of ", N);
      TORCH_CHECK(slots_[b] >= 0 && slots_[b] < N * P_, "pyengine::", op, ": write_slots[", b, "] = ", slots_[b],
                  " is not a slot of ", N * P_);
      max_context_ = std::max(max_context_, ctx);
    }
  }

  bool visible(int64_t b, int64_t t) const {
    if (!mask_.defined()) return true;
    if (mask_.scalar_type() == at::kLong) return mask_.const_data_ptr<int64_t>()[b * mask_.stride(0) + t] != 0;
    return mask_.const_data_ptr<bool>()[b * mask_.stride(0) + t];
  }

  bool paged_ = false;
  at::Tensor table_paged_, context_t_, slots_t_;
  const int64_t *blocks_ = nullptr, *context_ = nullptr, *slots_ = nullptr;
  int64_t P_ = 0, block_stride_ = 0, max_context_ = 0;
  int64_t length_, H_;
  float scale_;
  int64_t B_ = 0, Hkv_ = 0, Tmax_ = 0, D_ = 0, qs_ = 0, os_ = 0;
  bool rope_ = false;
  at::Tensor pos_, mask_, table_;
  const float *cp_ = nullptr, *sp_ = nullptr, *q_all_ = nullptr;
  float *kc_ = nullptr, *vc_ = nullptr, *o_ = nullptr;
};

}  // namespace pyengine::cpu
