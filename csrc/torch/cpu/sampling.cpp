// CPU launchers for the warpers, argmax, the counter-based uniform and the fused selection ops.
#include "common.h"
#include "pyengine/fused.h"
#include "pyengine/masks.h"
#include "pyengine/random.h"

namespace pyengine::cpu {
namespace {

int64_t min_keep_arg(int64_t min_keep, const char* op) {
  TORCH_CHECK(min_keep >= 1, "pyengine::", op, ": min_tokens_to_keep must be >= 1, got ", min_keep);
  return min_keep;
}

at::Tensor top_k_mask(const at::Tensor& scores, int64_t top_k, double fv, int64_t min_keep) {
  const at::Tensor s = scores_arg(scores, "top_k_mask");
  TORCH_CHECK(top_k >= 0, "pyengine::top_k_mask: top_k must be >= 0, got ", top_k);
  const int64_t V = s.size(1), k = std::min(std::max(top_k, min_keep_arg(min_keep, "top_k_mask")), V);
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(s.size(0), V, [&](int64_t b0, int64_t b1) {
    std::vector<float> buf(V + 16);
    for (int64_t b = b0; b < b1; ++b) top_k_mask_row(x + b * V, o + b * V, V, k, static_cast<float>(fv), buf.data());
  });
  return out;
}

at::Tensor top_p_mask(const at::Tensor& scores, double top_p, double fv, int64_t min_keep) {
  const at::Tensor s = scores_arg(scores, "top_p_mask");
  TORCH_CHECK(top_p >= 0 && top_p <= 1, "pyengine::top_p_mask: top_p must be in [0, 1], got ", top_p);
  min_keep_arg(min_keep, "top_p_mask");
  const int64_t V = s.size(1);
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(s.size(0), V, [&](int64_t b0, int64_t b1) {
    std::vector<float> buf(V + 16), cv(V + 16);  // +16: slack for full-width compressed stores
    std::vector<double> e(V + 16), ce(V + 16);
    std::vector<int32_t> ci(V + 16);
    for (int64_t b = b0; b < b1; ++b)
      top_p_mask_row(x + b * V, o + b * V, V, top_p, static_cast<float>(fv), min_keep, buf.data(), e.data(),
                     Candidates{cv.data(), ce.data(), ci.data()});
  });
  return out;
}

at::Tensor min_p_mask(const at::Tensor& scores, double min_p, double fv, int64_t min_keep) {
  const at::Tensor s = scores_arg(scores, "min_p_mask");
  TORCH_CHECK(min_p >= 0 && min_p <= 1, "pyengine::min_p_mask: min_p must be in [0, 1], got ", min_p);
  min_keep_arg(min_keep, "min_p_mask");
  const int64_t V = s.size(1);
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(s.size(0), V, [&](int64_t b0, int64_t b1) {
    std::vector<float> buf(V + 16);
    for (int64_t b = b0; b < b1; ++b)
      min_p_mask_row(x + b * V, o + b * V, V, min_p, static_cast<float>(fv), min_keep, buf.data());
  });
  return out;
}

at::Tensor argmax(const at::Tensor& scores) {
  const at::Tensor s = scores_arg(scores, "argmax");
  const int64_t B = s.size(0), V = s.size(1);
  at::Tensor out = at::empty({B}, s.options().dtype(at::kLong));
  const float* x = s.const_data_ptr<float>();
  int64_t* o = out.mutable_data_ptr<int64_t>();
  parallel_rows(B, V, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) o[b] = argmax_row(x + b * V, V);
  });
  return out;
}

at::Tensor uniform(const at::Tensor& seed, const at::Tensor& step, const at::Tensor& row_key) {
  const int64_t B = seed.numel();
  const at::Tensor sd = per_row_arg(seed, B, at::kLong, "uniform", "seed");
  const at::Tensor st = per_row_arg(step, B, at::kLong, "uniform", "step");
  const at::Tensor rk = per_row_arg(row_key, B, at::kLong, "uniform", "row_key");
  at::Tensor out = at::empty({B}, sd.options().dtype(at::kDouble));
  double* o = out.mutable_data_ptr<double>();
  for (int64_t b = 0; b < B; ++b)
    o[b] = pyengine::uniform(sd.const_data_ptr<int64_t>()[b], st.const_data_ptr<int64_t>()[b], rk.const_data_ptr<int64_t>()[b]);
  return out;
}

// The per-row parameters, checked once; `get(b)` assembles one row's RowParams.
struct FusedArgs {
  at::Tensor cur_len, penalty, min_len, temperature, top_k, top_p, min_p, seed, step;
  int64_t min_keep = 1;

  RowParams get(int64_t b, bool sample) const {
    RowParams p;
    p.penalty = static_cast<float>(penalty.const_data_ptr<double>()[b]);
    p.ban_eos = cur_len.const_data_ptr<int64_t>()[b] < min_len.const_data_ptr<int64_t>()[b];
    if (!sample) return p;
    p.temperature = temperature.const_data_ptr<double>()[b];
    p.top_k = top_k.const_data_ptr<int64_t>()[b];
    p.top_p = top_p.const_data_ptr<double>()[b];
    p.min_p = min_p.const_data_ptr<double>()[b];
    p.min_tokens_to_keep = min_keep;
    p.u = pyengine::uniform(seed.const_data_ptr<int64_t>()[b], step.const_data_ptr<int64_t>()[b], 0);
    return p;
  }
};

void check_sampling_params(const FusedArgs& a, int64_t B) {
  for (int64_t b = 0; b < B; ++b) {
    const double t = a.temperature.const_data_ptr<double>()[b], p = a.top_p.const_data_ptr<double>()[b];
    const double mp = a.min_p.const_data_ptr<double>()[b];
    TORCH_CHECK(t > 0, "pyengine::fused_sample: temperature must be > 0, got ", t, " in row ", b);
    TORCH_CHECK(p >= 0 && p <= 1, "pyengine::fused_sample: top_p must be in [0, 1], got ", p, " in row ", b);
    TORCH_CHECK(mp >= 0 && mp <= 1, "pyengine::fused_sample: min_p must be in [0, 1], got ", mp, " in row ", b);
    TORCH_CHECK(a.top_k.const_data_ptr<int64_t>()[b] >= 0, "pyengine::fused_sample: top_k must be >= 0 (0 = off)");
  }
}

at::Tensor run_fused(const char* op, bool sample, const at::Tensor& scores, const at::Tensor& tokens,
                     const FusedArgs& a, at::IntArrayRef eos, at::IntArrayRef banned) {
  const at::Tensor s = scores_arg(scores, op);
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = tokens_arg(tokens, B, V, op);
  ids_arg(eos, V, op, "eos_token_ids");
  ids_arg(banned, V, op, "banned");
  const int64_t* cl = a.cur_len.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(cl[b] >= 0 && cl[b] <= tok.size(1), "pyengine::", op, ": cur_len[", b, "] = ", cl[b],
                " is outside [0, T = ", tok.size(1), "]");
  const BanLists bans{eos.data(), static_cast<int64_t>(eos.size()), banned.data(), static_cast<int64_t>(banned.size())};
  at::Tensor out = at::empty({B}, s.options().dtype(at::kLong));
  const float* x = s.const_data_ptr<float>();
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  int64_t* o = out.mutable_data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    FusedScratch w(V);
    for (int64_t b = b0; b < b1; ++b) {
      const RowParams p = a.get(b, sample);
      const int64_t* row = tp + b * tok.stride(0);
      o[b] = sample ? fused_sample_row(x + b * V, V, row, cl[b], p, bans, w)
                    : fused_argmax_row(x + b * V, V, row, cl[b], p, bans, w);
    }
  });
  return out;
}

at::Tensor fused_sample(const at::Tensor& scores, const at::Tensor& tokens, const at::Tensor& cur_len,
                        const at::Tensor& penalty, const at::Tensor& min_len, at::IntArrayRef eos,
                        at::IntArrayRef banned, const at::Tensor& temperature, const at::Tensor& top_k,
                        const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor& seed,
                        const at::Tensor& step, int64_t min_keep) {
  const int64_t B = scores.size(0);
  const char* op = "fused_sample";
  FusedArgs a{per_row_arg(cur_len, B, at::kLong, op, "cur_len"),   per_row_arg(penalty, B, at::kDouble, op, "penalty"),
              per_row_arg(min_len, B, at::kLong, op, "min_len"),   per_row_arg(temperature, B, at::kDouble, op, "temperature"),
              per_row_arg(top_k, B, at::kLong, op, "top_k"),       per_row_arg(top_p, B, at::kDouble, op, "top_p"),
              per_row_arg(min_p, B, at::kDouble, op, "min_p"),     per_row_arg(seed, B, at::kLong, op, "seed"),
              per_row_arg(step, B, at::kLong, op, "step"),         min_keep_arg(min_keep, op)};
  check_sampling_params(a, B);
  return run_fused(op, true, scores, tokens, a, eos, banned);
}

at::Tensor fused_argmax(const at::Tensor& scores, const at::Tensor& tokens, const at::Tensor& cur_len,
                        const at::Tensor& penalty, const at::Tensor& min_len, at::IntArrayRef eos,
                        at::IntArrayRef banned) {
  const int64_t B = scores.size(0);
  const char* op = "fused_argmax";
  FusedArgs a;
  a.cur_len = per_row_arg(cur_len, B, at::kLong, op, "cur_len");
  a.penalty = per_row_arg(penalty, B, at::kDouble, op, "penalty");
  a.min_len = per_row_arg(min_len, B, at::kLong, op, "min_len");
  return run_fused(op, false, scores, tokens, a, eos, banned);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("top_k_mask", &top_k_mask);
  m.impl("top_p_mask", &top_p_mask);
  m.impl("min_p_mask", &min_p_mask);
  m.impl("argmax", &argmax);
  m.impl("uniform", &uniform);
  m.impl("fused_sample", &fused_sample);
  m.impl("fused_argmax", &fused_argmax);
}

}  // namespace pyengine::cpu
