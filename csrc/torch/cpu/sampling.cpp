// CPU launchers for the warpers, argmax, torch's multinomial draw, the counter-based uniform and the fused
// selection ops.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>

#include <cmath>
#include <mutex>

#include "common.h"
#include "pyengine/fused.h"
#include "pyengine/masks.h"
#include "pyengine/mt19937.h"
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

// torch.multinomial(torch.softmax(scores, -1), 1) for float32 scores: the same token and the same generator
// state afterwards. torch draws one sample as argmax(p / q), q ~ Exp(1) filled over the whole [B, V] tensor
// by `exponential_` (one random64() per element, in memory order: serial, ~20 ns an element). Where p is 0
// the ratio is 0 and cannot win, so only the words of the tokens with p > 0 are tempered and turned into
// q; the stream is still advanced over every element, a twisted block (624 words) at a time. Bit-exact: q
// is computed with the same formula in double (-log1p(-u), u = 53 bits / 2^53), p / q in float32, ties to
// the first index; a pair of all-zero words (u = 0, q = 0) is seen even where p = 0 (0 / 0 = NaN wins, as
// in torch.argmax).
at::Tensor sample_from_scores(const at::Tensor& scores, const c10::optional<at::Generator>& generator) {
  const at::Tensor s = scores_arg(scores, "sample_from_scores");
  const at::Tensor probs = at::softmax(s, -1).contiguous();  // torch.softmax's exact values
  const int64_t B = probs.size(0), V = probs.size(1);
  const float* p = probs.const_data_ptr<float>();
  // torch.multinomial's checks, in its words, and the tokens that can be drawn (p > 0), ascending. When
  // most tokens live (no top-k / top-p before the draw), -log1p per token is the cost either way: torch's
  // own loop draws then.
  std::vector<int64_t> live, row_begin(B + 1, 0);
  const size_t dense = static_cast<size_t>(B * V / 4);
  bool bad = false, empty_row = false;
  auto add = [&](int64_t j) {
    if (live.size() <= dense) live.push_back(j);
  };
  for (int64_t b = 0; b < B; ++b) {
    const float* row = p + b * V;
    int64_t positive = 0, i = 0;
#if PYENGINE_AVX512
    for (; i + 16 <= V; i += 16) {
      const __m512 x = _mm512_loadu_ps(row + i);
      const __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ) &
                           _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_LT_OQ);  // false for NaN
      bad |= ok != 0xFFFF;
      const uint32_t pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
      positive += __builtin_popcount(pos);
      for (uint32_t m = pos; m; m &= m - 1) add(b * V + i + __builtin_ctz(m));
    }
#endif
    for (; i < V; ++i) {
      bad |= !(row[i] >= 0.f) | !(row[i] < INFINITY);
      positive += row[i] > 0.f;
      if (row[i] > 0.f) add(b * V + i);
    }
    empty_row |= positive == 0;
    row_begin[b + 1] = static_cast<int64_t>(live.size());
  }
  TORCH_CHECK(!bad, "probability tensor contains either `inf`, `nan` or element < 0");
  TORCH_CHECK(!empty_row, "invalid multinomial distribution (sum of probabilities <= 0)");
  if (live.size() > dense) return at::multinomial(probs, 1, false, generator).squeeze(1);

  // 1. Walk the stream (serial, as the generator is): keep the raw words of the live tokens, and of any
  //    other pair whose raw low word is 0 (tempered u = 0 gives q = 0: 0 / 0 = NaN, which torch.argmax
  //    picks; about 2^-32 a token).
  std::vector<uint64_t> words(live.size());
  std::vector<std::pair<int64_t, uint64_t>> zero_pairs;
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    at::mt19937 engine = gen->engine();
    at::mt19937_data_pod data = engine.data();
    Mt19937Stream stream{data.state_.data(), data.left_, data.next_};
    size_t c = 0;
    stream.pairs(B * V, live.data(), static_cast<int64_t>(live.size()), [&](int64_t j, uint32_t hi, uint32_t lo) {
      const uint64_t pair = (static_cast<uint64_t>(hi) << 32) | lo;
      if (c < live.size() && live[c] == j)
        words[c++] = pair;
      else
        zero_pairs.emplace_back(j, pair);
    });
    data.left_ = stream.left;
    data.next_ = stream.next;
    engine.set_data(data);
    gen->set_engine(engine);
  }
  // 2. Per row, in parallel: ratio p / q of each live token, the first largest wins.
  auto ratio = [&](int64_t j, uint64_t pair) {
    const uint64_t bits = ((static_cast<uint64_t>(Mt19937Stream::temper(static_cast<uint32_t>(pair >> 32))) << 32) |
                           Mt19937Stream::temper(static_cast<uint32_t>(pair))) &
                          ((uint64_t{1} << 53) - 1);
    const double u = static_cast<double>(bits) * (1.0 / static_cast<double>(uint64_t{1} << 53));
    const float q = static_cast<float>(-1.0 * std::log1p(-u));  // exponential_distribution<double>, lambda 1
    return p[j] / q;
  };
  std::vector<int64_t> best_idx(B, 0);
  at::parallel_for(0, B, std::max<int64_t>(1, 65536 / V), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float best = 0.f;  // every ratio is >= 0: the first index wins a row of zeros
      for (int64_t c = row_begin[b]; c < row_begin[b + 1]; ++c) {
        const float r = ratio(live[c], words[c]);
        if (r > best) {
          best = r;
          best_idx[b] = live[c] - b * V;
        }
      }
    }
  });
  std::vector<char> has_nan(B, 0);
  for (const auto& [j, pair] : zero_pairs) {  // ascending j: a row's first NaN wins
    const int64_t b = j / V;
    const float r = ratio(j, pair);
    if (!has_nan[b] && r != r) {
      has_nan[b] = 1;
      best_idx[b] = j - b * V;
    }
  }
  at::Tensor out = at::empty({B}, s.options().dtype(at::kLong));
  std::copy(best_idx.begin(), best_idx.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("top_k_mask", &top_k_mask);
  m.impl("top_p_mask", &top_p_mask);
  m.impl("min_p_mask", &min_p_mask);
  m.impl("argmax", &argmax);
  m.impl("sample_from_scores", &sample_from_scores);
  m.impl("uniform", &uniform);
  m.impl("fused_sample", &fused_sample);
  m.impl("fused_argmax", &fused_argmax);
}

}  // namespace pyengine::cpu
