// Shared argument checks and row parallelism for the CPU launchers.
//
// Every launcher validates dtype, device, shape and ids with TORCH_CHECK before any kernel runs, so bad
// input raises a RuntimeError naming the op and the argument instead of reading out of bounds.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pyengine::cpu {

// Contiguous float32 [B, V] scores on the CPU.
inline at::Tensor scores_arg(const at::Tensor& s, const char* op) {
  TORCH_CHECK(s.device().is_cpu(), "pyengine::", op, ": scores must be on the CPU, got ", s.device());
  TORCH_CHECK(s.scalar_type() == at::kFloat, "pyengine::", op, ": scores must be float32, got ", s.scalar_type());
  TORCH_CHECK(s.dim() == 2, "pyengine::", op, ": scores must be [B, V], got shape ", s.sizes());
  TORCH_CHECK(s.size(1) > 0, "pyengine::", op, ": scores has an empty vocabulary");
  return s.contiguous();
}

// int64 [B, T] ids with unit inner stride (a column slice of the engine's token buffer is fine), every id
// in [0, V).
inline at::Tensor tokens_arg(const at::Tensor& t, int64_t B, int64_t V, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), "pyengine::", op, ": tokens must be on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kLong, "pyengine::", op, ": tokens must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B, "pyengine::", op, ": tokens must be [B, T] with B = ", B,
              ", got shape ", t.sizes());
  at::Tensor c = t.stride(1) == 1 ? t : t.contiguous();
  const int64_t* p = c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < c.size(1); ++j) {
      const int64_t id = p[b * c.stride(0) + j];
      TORCH_CHECK(id >= 0 && id < V, "pyengine::", op, ": token id ", id, " at [", b, ", ", j,
                  "] is out of range for a vocabulary of ", V);
    }
  return c;
}

inline void ids_arg(at::IntArrayRef ids, int64_t V, const char* op, const char* what) {
  for (int64_t id : ids)
    TORCH_CHECK(id >= 0 && id < V, "pyengine::", op, ": ", what, " id ", id, " is out of range for a vocabulary of ", V);
}

// A [B] CPU tensor of the given dtype, contiguous.
inline at::Tensor per_row_arg(const at::Tensor& t, int64_t B, at::ScalarType dtype, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.dim() == 1 && t.size(0) == B, "pyengine::", op,
              ": ", name, " must be a [", B, "] ", dtype, " CPU tensor, got ", t.scalar_type(), " ", t.sizes(),
              " on ", t.device());
  return t.contiguous();
}

// Rows in parallel; small problems stay on the calling thread (a pool wake-up costs more than they do).
template <class F>
inline void parallel_rows(int64_t B, int64_t V, const F& f) {
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(V, 1));
  at::parallel_for(0, B, grain, f);
}

}  // namespace pyengine::cpu
