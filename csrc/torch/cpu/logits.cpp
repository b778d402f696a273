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

at::Tensor bad_words(const at::Tensor& scores, const at::Tensor& tokens, at::IntArrayRef flat, at::IntArrayRef lens) {
  const at::Tensor s = scores_arg(scores, "bad_words");
  const int64_t B = s.size(0), V = s.size(1);
  const at::Tensor tok = tokens_arg(tokens, B, V, "bad_words");
  int64_t total = 0;
  for (int64_t len : lens) {
    TORCH_CHECK(len >= 1, "pyengine::bad_words: every bad word needs at least one token");
    total += len;
    ids_arg(flat.slice(total - 1, 1), V, "bad_words", "bad word");  // the banned (last) token
  }
  TORCH_CHECK(total == static_cast<int64_t>(flat.size()), "pyengine::bad_words: word_lengths sum to ", total,
              " but words_flat holds ", flat.size(), " ids");
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
}

}  // namespace pyengine::cpu
