// CPU launchers for the logits processors (kernels: csrc/include/pyengine/logits.h).
#include "common.h"
#include "pyengine/logits.h"

namespace pyengine::cpu {
namespace {

at::Tensor temperature(const at::Tensor& scores, double t) {
  const at::Tensor s = scores_arg(scores, "temperature");
  TORCH_CHECK(t > 0, "pyengine::temperature: temperature must be > 0, got ", t);
  at::Tensor out = at::empty_like(s);
  const int64_t V = s.size(1);
  const float* x = s.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(s.size(0), V, [&](int64_t b0, int64_t b1) {
    temperature_row(x + b0 * V, o + b0 * V, (b1 - b0) * V, static_cast<float>(t));
  });
  return out;
}

at::Tensor repetition_penalty(const at::Tensor& scores, const at::Tensor& tokens, double penalty) {
  const at::Tensor s = scores_arg(scores, "repetition_penalty");
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = tokens_arg(tokens, B, V, "repetition_penalty");
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(B, V, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      repetition_penalty_row(x + b * V, o + b * V, V, tp + b * tok.stride(0), tok.size(1), static_cast<float>(penalty));
  });
  return out;
}

at::Tensor min_length(const at::Tensor& scores, int64_t cur_len, int64_t min_len, at::IntArrayRef eos) {
  const at::Tensor s = scores_arg(scores, "min_length");
  const int64_t B = s.size(0), V = s.size(1);
  ids_arg(eos, V, "min_length", "eos_token_ids");
  at::Tensor out = s.clone();
  if (cur_len >= min_len) return out;
  float* o = out.mutable_data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) ban_ids_row(o + b * V, eos.data(), static_cast<int64_t>(eos.size()));
  return out;
}

at::Tensor no_repeat_ngram(const at::Tensor& scores, const at::Tensor& tokens, int64_t n) {
  const at::Tensor s = scores_arg(scores, "no_repeat_ngram");
  TORCH_CHECK(n >= 1, "pyengine::no_repeat_ngram: ngram_size must be >= 1, got ", n);
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = tokens_arg(tokens, B, V, "no_repeat_ngram");
  const int64_t T = tok.size(1);
  if (T + 1 < n) return s.clone();
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(B, V, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) no_repeat_ngram_row(x + b * V, o + b * V, V, tp + b * tok.stride(0), T, n);
  });
  return out;
}

void check_bad_words(at::IntArrayRef flat, at::IntArrayRef lens, int64_t V) {
  int64_t total = 0;
  for (int64_t len : lens) {
    TORCH_CHECK(len >= 1, "pyengine::bad_words: every bad word needs at least one token");
    total += len;
    TORCH_CHECK(total <= static_cast<int64_t>(flat.size()), "pyengine::bad_words: word_lengths sum past the ",
                flat.size(), " ids of words_flat");
    ids_arg(flat.slice(total - 1, 1), V, "bad_words", "bad word");  // the banned (last) token
  }
  TORCH_CHECK(total == static_cast<int64_t>(flat.size()), "pyengine::bad_words: word_lengths sum to ", total,
              " but words_flat holds ", flat.size(), " ids");
}

at::Tensor bad_words(const at::Tensor& scores, const at::Tensor& tokens, at::IntArrayRef flat, at::IntArrayRef lens) {
  const at::Tensor s = scores_arg(scores, "bad_words");
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = tokens_arg(tokens, B, V, "bad_words");
  check_bad_words(flat, lens, V);
  at::Tensor out = at::empty_like(s);
  const float* x = s.const_data_ptr<float>();
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(B, V, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      bad_words_row(x + b * V, o + b * V, V, tp + b * tok.stride(0), tok.size(1), flat.data(), lens.data(),
                    static_cast<int64_t>(lens.size()));
  });
  return out;
}

// tokens_arg with a branch-free range scan first: for an in-place op, which touches only about one score
// per id, checking each id with its own TORCH_CHECK costs as much as the op. On a bad id tokens_arg
// runs again and raises naming it.
at::Tensor history_arg(const at::Tensor& t, int64_t B, int64_t V, const char* op) {
  if (!t.device().is_cpu() || t.scalar_type() != at::kLong || t.dim() != 2 || t.size(0) != B || t.stride(1) != 1)
    return tokens_arg(t, B, V, op);
  const int64_t T = t.size(1), stride = t.stride(0);
  const int64_t* p = t.const_data_ptr<int64_t>();
  const uint64_t limit = static_cast<uint64_t>(V);
  bool bad = false;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = p + b * stride;
    for (int64_t j = 0; j < T; ++j) bad |= static_cast<uint64_t>(row[j]) >= limit;  // negative ids wrap high
  }
  return bad ? tokens_arg(t, B, V, op) : t;
}

// The `.out` overloads write into `out`: scores itself (in place, the engine's buffer) or a separate
// float32 [B, V] contiguous CPU tensor that does not overlap it. They touch only the entries they change.
at::Tensor& out_arg(at::Tensor& out, const at::Tensor& s, const char* op) {
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == at::kFloat && out.sizes() == s.sizes() &&
                  out.is_contiguous(),
              "pyengine::", op, ".out: out must be a contiguous float32 CPU tensor of shape ", s.sizes(), ", got ",
              out.scalar_type(), " ", out.sizes(), " on ", out.device());
  if (out.data_ptr() != s.data_ptr()) out.copy_(s);
  return out;
}

at::Tensor& repetition_penalty_out(const at::Tensor& scores, const at::Tensor& tokens, double penalty, at::Tensor& out) {
  const at::Tensor s = scores_arg(scores, "repetition_penalty");
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = history_arg(tokens, B, V, "repetition_penalty");
  out_arg(out, s, "repetition_penalty");
  const int64_t T = tok.size(1);
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(B, T, [&](int64_t b0, int64_t b1) {
    std::vector<float> old(static_cast<size_t>(T));
    for (int64_t b = b0; b < b1; ++b)
      repetition_penalty_inplace_row(o + b * V, tp + b * tok.stride(0), T, static_cast<float>(penalty), old.data());
  });
  return out;
}

at::Tensor& min_length_out(const at::Tensor& scores, int64_t cur_len, int64_t min_len, at::IntArrayRef eos,
                           at::Tensor& out) {
  const at::Tensor s = scores_arg(scores, "min_length");
  const int64_t B = s.size(0), V = s.size(1);
  ids_arg(eos, V, "min_length", "eos_token_ids");
  out_arg(out, s, "min_length");
  if (cur_len >= min_len) return out;
  float* o = out.mutable_data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) ban_ids_row(o + b * V, eos.data(), static_cast<int64_t>(eos.size()));
  return out;
}

at::Tensor& bad_words_out(const at::Tensor& scores, const at::Tensor& tokens, at::IntArrayRef flat,
                          at::IntArrayRef lens, at::Tensor& out) {
  const at::Tensor s = scores_arg(scores, "bad_words");
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = history_arg(tokens, B, V, "bad_words");
  check_bad_words(flat, lens, V);
  out_arg(out, s, "bad_words");
  const int64_t* tp = tok.const_data_ptr<int64_t>();
  float* o = out.mutable_data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    bad_words_inplace_row(o + b * V, tp + b * tok.stride(0), tok.size(1), flat.data(), lens.data(),
                          static_cast<int64_t>(lens.size()));
  return out;
}

at::Tensor inf_nan_remove(const at::Tensor& scores) {
  const at::Tensor s = scores_arg(scores, "inf_nan_remove");
  at::Tensor out = at::empty_like(s);
  const int64_t V = s.size(1);
  const float* x = s.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(s.size(0), V, [&](int64_t b0, int64_t b1) {
    inf_nan_remove_row(x + b0 * V, o + b0 * V, (b1 - b0) * V);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("temperature", &temperature);
  m.impl("repetition_penalty", &repetition_penalty);
  m.impl("min_length", &min_length);
  m.impl("no_repeat_ngram", &no_repeat_ngram);
  m.impl("bad_words", &bad_words);
  m.impl("inf_nan_remove", &inf_nan_remove);
  m.impl("repetition_penalty.out", &repetition_penalty_out);
  m.impl("min_length.out", &min_length_out);
  m.impl("bad_words.out", &bad_words_out);
}

}  // namespace pyengine::cpu
