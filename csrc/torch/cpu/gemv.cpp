// CPU launcher for linear_into: small-M matrix products for decoding (kernels: csrc/include/pyengine/gemv.h).
//
// out[m, n] = (accumulate ? out[m, n] : 0) + bias[n] + scale[n] * (x[m] . w[n]), written in place into a
// caller-owned buffer, so a decode step allocates nothing. `weights` is a list whose output columns are
// laid side by side in `out` (q, k, v or gate, up): one call, one thread split, no concatenated copy of
// the parameters. The columns are split between threads in 16-column chunks, so each core streams its
// own slice of every weight matrix once per call.
#include "decode_plan.h"

namespace pyengine::cpu {
namespace {

void linear_into(at::Tensor& out, const at::Tensor& x, at::TensorList weights, at::TensorList scales,
                 at::TensorList biases, bool accumulate, bool weight_kn) {
  const LinearPlan plan(out, x, weights, scales, biases, accumulate, weight_kn, "linear_into");
  at::parallel_for(0, plan.items(), plan.grain(), [&](int64_t c0, int64_t c1) { plan.run(c0, c1); });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("linear_into", &linear_into); }

}  // namespace pyengine::cpu
