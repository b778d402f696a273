// XLA custom-call targets `pyengine_argmax` and `pyengine_sample_from_scores`: the token choice at the end
// of a decode step, over the row kernels the torch `cpp` ops use (include/pyengine/sampling.h, fused.h).
//
// Why: XLA:CPU's argmax over [8, 50257] took 0.77 ms, and the inverse-CDF draw (softmax, cumsum over the
// vocabulary, compare, count) 3.0 ms, against ~26 ms for a whole GPT-2-small step at batch 8. Here one
// pass finds the maximum and one computes exp (float64, as the NumPy reference) and walks the mass.
//
// Inputs {scores [B, V] float32} (argmax) or {scores [B, V] float32, uniform [B] float32} (sample), output
// int32 [B]; opaque "B V". Meaning (pyengine/ops/sampling.py): argmax's ties go to the lowest id and a NaN
// counts as the largest; a draw is the first token whose running probability mass exceeds u times the
// total, never a token of probability 0, and 0 for a row without a finite score or with a NaN.
#include <cstdint>
#include <limits>
#include <cstdio>
#include <string>
#include <vector>

#include "pyengine/fused.h"
#include "team.h"

namespace {

struct RowsShape {
  long long B = 0, V = 0;
  bool ok = false;
};

RowsShape parse(const char* opaque, size_t len) {
  RowsShape s;
  const std::string text(opaque, len);  // not NUL-terminated by XLA
  s.ok = std::sscanf(text.c_str(), "%lld %lld", &s.B, &s.V) == 2 && s.B > 0 && s.V > 0;
  return s;
}

bool any_nan(const float* x, int64_t n) {
  int nan = 0;
  for (int64_t i = 0; i < n; ++i) nan |= x[i] != x[i];  // vectorised compare-and-or
  return nan != 0;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void pyengine_argmax(void* out, const void** in, const char* opaque,
                                                            size_t opaque_len, void*) {
  const RowsShape s = parse(opaque, opaque_len);
  if (!s.ok) return;
  const float* x = static_cast<const float*>(in[0]);
  int32_t* o = static_cast<int32_t*>(out);
  pyengine::xla::Team::get().run(s.B * s.V >= (1 << 16) ? s.B : 1, [&](int member, int members) {
    for (long long b = s.B * member / members; b < s.B * (member + 1) / members; ++b)
      o[b] = static_cast<int32_t>(pyengine::argmax_row(x + b * s.V, s.V));
  });
}

__attribute__((visibility("default"))) void pyengine_sample_from_scores(void* out, const void** in,
                                                                        const char* opaque, size_t opaque_len,
                                                                        void*) {
  const RowsShape s = parse(opaque, opaque_len);
  if (!s.ok) return;
  const float* x = static_cast<const float*>(in[0]);
  const float* uniform = static_cast<const float*>(in[1]);
  int32_t* o = static_cast<int32_t*>(out);
  pyengine::xla::Team::get().run(s.B * s.V >= (1 << 16) ? s.B : 1, [&](int member, int members) {
    std::vector<double> e(s.V + 16);
    for (long long b = s.B * member / members; b < s.B * (member + 1) / members; ++b) {
      const float* row = x + b * s.V;
      const float m = pyengine::row_max(row, s.V);
      if (!(m > -std::numeric_limits<float>::infinity())) {  // no finite score (or a NaN max): token 0
        o[b] = 0;
        continue;
      }
      if (any_nan(row, s.V)) {  // the reference's softmax is NaN everywhere, and it draws 0
        o[b] = 0;
        continue;
      }
      pyengine::exp_store(row, s.V, m, 1.0, e.data());
      o[b] = static_cast<int32_t>(pyengine::draw(e.data(), nullptr, s.V, static_cast<double>(uniform[b])));
    }
  });
}

}  // extern "C"
