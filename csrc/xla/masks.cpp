// XLA custom-call targets `pyengine_top_k_mask`, `pyengine_top_p_mask` and `pyengine_min_p_mask`: the
// sampling warpers' row kernels (include/pyengine/masks.h, the ones the torch `cpp` ops run) for the
// compiled loops of JAX and TensorFlow.
//
// Why: a traced top_k / top_p cannot size lax.top_k, so XLA has to find thresholds by bisection (32
// passes over the scores) or sort the vocabulary (top_p; min_p's min_tokens_to_keep on JAX); at batch
// 8 x 50257 sampling cost ~5 ms a step more than greedy. These read a row about once.
//
// Inputs {scores [B, V] float32, value (a 0-d array: top_k int32 / top_p, min_p float32)}, output [B, V] with the
// removed tokens set to the filter value; opaque "B V min_tokens_to_keep filter_value". The value is an
// input, not part of opaque, so a new top_k / top_p does not recompile.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "pyengine/masks.h"
#include "team.h"

namespace {

struct MaskShape {
  long long B = 0, V = 0, min_keep = 1;
  float fv = 0.f;
  bool ok = false;
};

MaskShape parse(const char* opaque, size_t len) {
  MaskShape s;
  double fv = 0.0;
  const std::string text(opaque, len);
  s.ok = std::sscanf(text.c_str(), "%lld %lld %lld %lf", &s.B, &s.V, &s.min_keep, &fv) == 4 && s.B > 0 && s.V > 0;
  s.fv = static_cast<float>(fv);
  return s;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void pyengine_top_k_mask(void* out, const void** in, const char* opaque,
                                                                 size_t opaque_len, void*) {
  const MaskShape s = parse(opaque, opaque_len);
  if (!s.ok) return;
  const float* x = static_cast<const float*>(in[0]);
  const int64_t top_k = *static_cast<const int32_t*>(in[1]);
  const int64_t k = std::min<int64_t>(std::max<int64_t>(std::max<int64_t>(top_k, s.min_keep), 1), s.V);
  float* o = static_cast<float*>(out);
  pyengine::xla::Team::get().run(s.B, [&](int member, int members) {
    std::vector<float> buf(s.V + 16);
    for (long long b = s.B * member / members; b < s.B * (member + 1) / members; ++b)
      pyengine::top_k_mask_row(x + b * s.V, o + b * s.V, s.V, k, s.fv, buf.data());
  });
}

__attribute__((visibility("default"))) void pyengine_top_p_mask(void* out, const void** in, const char* opaque,
                                                                 size_t opaque_len, void*) {
  const MaskShape s = parse(opaque, opaque_len);
  if (!s.ok) return;
  const float* x = static_cast<const float*>(in[0]);
  const double top_p = std::min(std::max(static_cast<double>(*static_cast<const float*>(in[1])), 0.0), 1.0);
  float* o = static_cast<float*>(out);
  pyengine::xla::Team::get().run(s.B, [&](int member, int members) {
    std::vector<float> buf(s.V + 16), cv(s.V + 16);  // +16: slack for full-width compressed stores
    std::vector<double> e(s.V + 16), ce(s.V + 16);
    std::vector<int32_t> ci(s.V + 16);
    for (long long b = s.B * member / members; b < s.B * (member + 1) / members; ++b)
      pyengine::top_p_mask_row(x + b * s.V, o + b * s.V, s.V, top_p, s.fv, s.min_keep, buf.data(), e.data(),
                               pyengine::Candidates{cv.data(), ce.data(), ci.data()});
  });
}

__attribute__((visibility("default"))) void pyengine_min_p_mask(void* out, const void** in, const char* opaque,
                                                                 size_t opaque_len, void*) {
  const MaskShape s = parse(opaque, opaque_len);
  if (!s.ok) return;
  const float* x = static_cast<const float*>(in[0]);
  const double min_p = std::min(std::max(static_cast<double>(*static_cast<const float*>(in[1])), 0.0), 1.0);
  float* o = static_cast<float*>(out);
  pyengine::xla::Team::get().run(s.B, [&](int member, int members) {
    std::vector<float> buf(s.V + 16);
    for (long long b = s.B * member / members; b < s.B * (member + 1) / members; ++b)
      pyengine::min_p_mask_row(x + b * s.V, o + b * s.V, s.V, min_p, s.fv, s.min_keep, buf.data());
  });
}

}  // extern "C"
