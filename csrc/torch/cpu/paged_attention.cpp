// CPU launcher for paged_attention (kernel: csrc/include/pyengine/paged_attention.h; spec and reference:
// pyengine/batch/paged_attention.py). Work items are (row, kv head, real query column) triples: decode steps
// have many rows of one column, prefill chunks few rows of many columns, and both fill the thread pool.
#include "common.h"
#include "pyengine/paged_attention.h"

#include <ATen/ops/zeros.h>

namespace pyengine::cpu {
namespace {

at::Tensor paged_attention(const at::Tensor& query, const at::Tensor& key_pool, const at::Tensor& value_pool,
                           const at::Tensor& block_table, const at::Tensor& context_lens,
                           const at::Tensor& query_lens, double scale) {
  const char* op = "paged_attention";
  TORCH_CHECK(query.device().is_cpu() && query.scalar_type() == at::kFloat && query.dim() == 4,
              "pyengine::paged_attention: query must be a float32 [B, H, s, D] CPU tensor, got ", query.scalar_type(),
              " ", query.sizes(), " on ", query.device());
  for (const at::Tensor* pool : {&key_pool, &value_pool})
    TORCH_CHECK(pool->device().is_cpu() && pool->scalar_type() == at::kFloat && pool->dim() == 4 &&
                    pool->is_contiguous() && pool->sizes() == key_pool.sizes(),
                "pyengine::paged_attention: key/value pools must be contiguous float32 [N, P, H_kv, D] CPU tensors of "
                "one shape, got ", pool->scalar_type(), " ", pool->sizes());
  const int64_t B = query.size(0), H = query.size(1), s = query.size(2), D = query.size(3);
  const int64_t N = key_pool.size(0), P = key_pool.size(1), Hkv = key_pool.size(2);
  TORCH_CHECK(key_pool.size(3) == D, "pyengine::paged_attention: head dim ", D, " of query vs ", key_pool.size(3),
              " of the pools");
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "pyengine::paged_attention: ", H, " query heads are not a multiple of ", Hkv,
              " kv heads");
  TORCH_CHECK(block_table.device().is_cpu() && block_table.scalar_type() == at::kLong && block_table.dim() == 2 &&
                  block_table.size(0) == B,
              "pyengine::paged_attention: block_table must be an int64 [B, M] CPU tensor with B = ", B, ", got ",
              block_table.scalar_type(), " ", block_table.sizes());
  const at::Tensor table = block_table.contiguous();
  const at::Tensor ctx = per_row_arg(context_lens, B, at::kLong, op, "context_lens");
  const at::Tensor qlen = per_row_arg(query_lens, B, at::kLong, op, "query_lens");
  const int64_t M = table.size(1);
  const int64_t* t = table.const_data_ptr<int64_t>();
  const int64_t* c = ctx.const_data_ptr<int64_t>();
  const int64_t* n = qlen.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {  // every id the kernel will read, checked once
    TORCH_CHECK(n[b] >= 0 && n[b] <= s && n[b] <= c[b], "pyengine::paged_attention: row ", b, " has query_len ", n[b],
                " but s = ", s, " and context_len = ", c[b]);
    TORCH_CHECK(c[b] <= M * P, "pyengine::paged_attention: row ", b, " has context_len ", c[b], " but its table holds ",
                M * P, " slots");
    for (int64_t j = 0; j < (c[b] + P - 1) / P; ++j)
      TORCH_CHECK(t[b * M + j] >= 0 && t[b * M + j] < N, "pyengine::paged_attention: block id ", t[b * M + j],
                  " at [", b, ", ", j, "] is out of range for a pool of ", N, " blocks");
  }
  const at::Tensor q = query.contiguous();
  at::Tensor out = at::zeros(query.sizes(), query.options());  // pad columns stay 0
  const PagedPools pools{key_pool.const_data_ptr<float>(), value_pool.const_data_ptr<float>(), P, Hkv, D};
  if (B == 0 || s == 0) return out;  // nothing to attend (and no context length to take the max of)
  const int64_t max_ctx = *std::max_element(c, c + B);
  const float* qp = q.const_data_ptr<float>();
  float* op_ = out.mutable_data_ptr<float>();
  // Items: (row, query column) pairs, every head of the column at once. They cost in proportion to their
  // context length, which differs between rows: threads take them one at a time (a static split leaves
  // one thread waiting on the other's longer rows).
  const int64_t items = B * s;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), items)));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t most = std::max<int64_t>(max_ctx, 1);
    std::vector<float> scores(H * most), q_scaled(H * D);
    std::vector<int64_t> off(most);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / s, i = item % s;
      if (i < s - n[b]) continue;  // left padding
      const int64_t offset = (b * H * s + i) * D;  // head 0, column i
      paged_attention_column(pools, t + b * M, c[b] - s + i, qp + offset, s * D, op_ + offset, s * D, H,
                             static_cast<float>(scale), scores.data(), off.data(), q_scaled.data());
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("paged_attention", &paged_attention); }

}  // namespace pyengine::cpu
