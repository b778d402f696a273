// XLA custom-call target `pyengine_top_logits`: each row's top k logits of the LM head exactly, -inf
// elsewhere, through the int8 screen of the head (include/pyengine/top_logits.h; the torch op of the same
// name is the reference user), and `pyengine_top_logits_screen`, which builds that screen.
//
// Inputs {x [M, K] float32, q [N, K] int8, scale [N] float32, slack [N] float32, w [N, K] float32,
// k [] int32}, output [M, N] float32; opaque "M K N". k arrives at run time (a compiled generate takes
// top_k as a value, so a new top_k does not recompile): k < 1 or k > kMaxK (past ~1k the candidates are no
// small part of the row), or a head with a non-finite weight, computes every logit with the full product.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "pyengine/top_logits.h"
#include "team.h"

namespace {

constexpr int64_t kChunk = 16;  // output columns per work item, as pyengine_linear
constexpr int64_t kMaxK = 1024;  // pyengine/ops/top_logits.py, TOP_LOGITS_MAX_K

struct Shape {
  long long M = 0, K = 0, N = 0;
};

Shape parse(const char* opaque, size_t len) {
  Shape s;
  const std::string text(opaque, len);  // not NUL-terminated by XLA
  if (std::sscanf(text.c_str(), "%lld %lld %lld", &s.M, &s.K, &s.N) != 3) s = Shape{};
  return s;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void pyengine_top_logits(void* out, const void** in, const char* opaque,
                                                                size_t opaque_len, void* /*status*/) {
  const Shape s = parse(opaque, opaque_len);
  const float* x = static_cast<const float*>(in[0]);
  const int8_t* q = static_cast<const int8_t*>(in[1]);
  const float* scale = static_cast<const float*>(in[2]);
  const float* slack = static_cast<const float*>(in[3]);
  const float* w = static_cast<const float*>(in[4]);
  const int64_t k = *static_cast<const int32_t*>(in[5]);
  float* o = static_cast<float*>(out);
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  if (s.M <= 0 || chunks == 0) return;
  // A head holding inf or NaN has non-finite slacks (screen_row): no bound, so the full product.
  bool finite = true;
  for (int64_t n = 0; n < s.N; ++n) finite &= std::isfinite(slack[n]);
  const bool screened = k >= 1 && k <= kMaxK && finite;
  auto& team = pyengine::xla::Team::get();
  // The int8 estimate (or, unscreened, the product itself) of every row: each member its own columns.
  team.run(chunks, [&](int member, int members) {
    const int64_t n0 = chunks * member / members * kChunk, n1 = std::min<int64_t>(s.N, chunks * (member + 1) / members * kChunk);
    if (n0 >= n1) return;
    if (screened)
      pyengine::gemv_nk(x, s.K, s.M, q, s.K, n0, n1, o, s.N, scale, nullptr, false);
    else
      pyengine::gemv_nk(x, s.K, s.M, w, s.K, n0, n1, o, s.N, nullptr, nullptr, false);
  });
  if (!screened) return;
  team.run(s.M, [&](int member, int members) {
    pyengine::TopLogitsScratch scratch;
    for (int64_t m = s.M * member / members; m < s.M * (member + 1) / members; ++m)
      pyengine::top_logits_row(x + m * s.K, w, slack, s.N, s.K, k, o + m * s.N, scratch);
  });
}

// The screen of a float32 head: inputs {w [N, K]}, a tuple output (q [N, K] int8, scale [N], slack [N]
// float32), which XLA:CPU hands over as an array of the element buffers; opaque "N K". A generate call
// builds it in its compiled function from the head as it is then (the weights may have changed since the
// last call), one pass over the rows.
__attribute__((visibility("default"))) void pyengine_top_logits_screen(void* out, const void** in, const char* opaque,
                                                                       size_t opaque_len, void* /*status*/) {
  long long N = 0, K = 0;
  const std::string text(opaque, opaque_len);
  if (std::sscanf(text.c_str(), "%lld %lld", &N, &K) != 2 || N <= 0 || K <= 0) return;
  const float* w = static_cast<const float*>(in[0]);
  void** parts = static_cast<void**>(out);
  int8_t* q = static_cast<int8_t*>(parts[0]);
  float* scale = static_cast<float*>(parts[1]);
  float* slack = static_cast<float*>(parts[2]);
  pyengine::xla::Team::get().run(N / 256 + 1, [&](int member, int members) {
    for (int64_t n = N * member / members; n < N * (member + 1) / members; ++n)
      pyengine::screen_row(w + n * K, K, q + n * K, scale + n, slack + n);
  });
}

}  // extern "C"
