// CPU launchers for the KV-cache ops (kernels and the paged design: csrc/include/pyengine/kv_cache.h).
#include <ATen/ops/full.h>

#include "common.h"
#include "pyengine/kv_cache.h"

namespace pyengine::cpu {
namespace {

void check_4d(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4 && t.stride(3) == 1, "pyengine::", op, ": ", name,
              " must be a 4-d CPU tensor with a contiguous last dim, got ", t.sizes(), " on ", t.device());
}

char* ptr(const at::Tensor& t) { return static_cast<char*>(const_cast<void*>(t.const_data_ptr())); }

void kv_append(at::Tensor& cache, const at::Tensor& values, int64_t start) {
  check_4d(cache, "kv_append", "cache [B, H, T, D]");
  check_4d(values, "kv_append", "values [B, H, s, D]");
  const int64_t B = cache.size(0), H = cache.size(1), s = values.size(2), D = cache.size(3);
  TORCH_CHECK(values.scalar_type() == cache.scalar_type(), "pyengine::kv_append: dtype mismatch ",
              values.scalar_type(), " vs ", cache.scalar_type());
  TORCH_CHECK(values.size(0) == B && values.size(1) == H && values.size(3) == D,
              "pyengine::kv_append: values ", values.sizes(), " do not match cache ", cache.sizes());
  TORCH_CHECK(start >= 0 && start + s <= cache.size(2), "pyengine::kv_append: positions [", start, ", ", start + s,
              ") do not fit a cache of length ", cache.size(2));
  const int64_t es = cache.element_size();
  parallel_rows(B * H, s * D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, h = r % H;
      char* dst = ptr(cache) + (b * cache.stride(0) + h * cache.stride(1) + start * cache.stride(2)) * es;
      const char* src = ptr(values) + (b * values.stride(0) + h * values.stride(1)) * es;
      copy_rows(dst, cache.stride(2) * es, src, values.stride(2) * es, s, D * es);
    }
  });
}

void kv_reorder(at::Tensor& cache, const at::Tensor& index) {
  TORCH_CHECK(cache.device().is_cpu() && cache.dim() >= 1 && cache.is_contiguous(),
              "pyengine::kv_reorder: cache must be a contiguous CPU tensor");
  const int64_t B = cache.size(0);
  const at::Tensor idx = per_row_arg(index, B, at::kLong, "kv_reorder", "index");
  const int64_t* ip = idx.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(ip[b] >= 0 && ip[b] < B, "pyengine::kv_reorder: index[", b, "] = ", ip[b], " is out of range");
  // Only the rows that change move; their sources are staged first since a source may be overwritten.
  const int64_t row = cache.numel() / std::max<int64_t>(B, 1) * cache.element_size();
  std::vector<int64_t> moved;
  for (int64_t b = 0; b < B; ++b)
    if (ip[b] != b) moved.push_back(b);
  std::vector<char> staged(moved.size() * row);
  char* base = ptr(cache);
  for (size_t j = 0; j < moved.size(); ++j) std::memcpy(staged.data() + j * row, base + ip[moved[j]] * row, row);
  for (size_t j = 0; j < moved.size(); ++j) std::memcpy(base + moved[j] * row, staged.data() + j * row, row);
}

// Block ids of block_table [B, M], checked against the pool's N blocks for the columns in use.
const int64_t* table_arg(const at::Tensor& table, int64_t B, int64_t cols, int64_t N, const char* op) {
  TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == at::kLong && table.dim() == 2 && table.size(0) == B &&
                  table.is_contiguous() && cols <= table.size(1),
              "pyengine::", op, ": block_table must be a contiguous int64 [B, M] CPU tensor with M >= ", cols,
              ", got ", table.scalar_type(), " ", table.sizes());
  const int64_t* t = table.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < cols; ++j)
      TORCH_CHECK(t[b * table.size(1) + j] >= 0 && t[b * table.size(1) + j] < N, "pyengine::", op, ": block_table[",
                  b, ", ", j, "] = ", t[b * table.size(1) + j], " is not a block of the pool (N = ", N, ")");
  return t;
}

void kv_append_paged(at::Tensor& pool, const at::Tensor& table, const at::Tensor& values, int64_t start) {
  check_4d(pool, "kv_append_paged", "pool [N, H, P, D]");
  check_4d(values, "kv_append_paged", "values [B, H, s, D]");
  const int64_t B = values.size(0), H = pool.size(1), P = pool.size(2), D = pool.size(3), s = values.size(2);
  TORCH_CHECK(values.scalar_type() == pool.scalar_type() && values.size(1) == H && values.size(3) == D && start >= 0,
              "pyengine::kv_append_paged: values ", values.sizes(), " do not match pool ", pool.sizes());
  const int64_t M = table.dim() == 2 ? table.size(1) : 0;
  const int64_t* t = table_arg(table, B, (start + s + P - 1) / P, pool.size(0), "kv_append_paged");
  const int64_t es = pool.element_size();
  parallel_rows(B * H, s * D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, h = r % H;
      for (int64_t pos = start; pos < start + s;) {
        const int64_t blk = t[b * M + pos / P], off = pos % P, run = std::min(P - off, start + s - pos);
        char* dst = ptr(pool) + (blk * pool.stride(0) + h * pool.stride(1) + off * pool.stride(2)) * es;
        const char* src = ptr(values) + (b * values.stride(0) + h * values.stride(1) + (pos - start) * values.stride(2)) * es;
        copy_rows(dst, pool.stride(2) * es, src, values.stride(2) * es, run, D * es);
        pos += run;
      }
    }
  });
}

at::Tensor kv_gather_paged(const at::Tensor& pool, const at::Tensor& table, int64_t length) {
  check_4d(pool, "kv_gather_paged", "pool [N, H, P, D]");
  const int64_t B = table.dim() == 2 ? table.size(0) : 0, H = pool.size(1), P = pool.size(2), D = pool.size(3);
  TORCH_CHECK(length >= 0, "pyengine::kv_gather_paged: length must be >= 0");
  const int64_t* t = table_arg(table, B, (length + P - 1) / P, pool.size(0), "kv_gather_paged");
  at::Tensor out = at::empty({B, H, length, D}, pool.options());
  const int64_t es = pool.element_size(), M = table.size(1);
  parallel_rows(B * H, length * D, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, h = r % H;
      for (int64_t pos = 0; pos < length; pos += P) {
        const int64_t run = std::min(P, length - pos);
        const char* src = ptr(pool) + (t[b * M + pos / P] * pool.stride(0) + h * pool.stride(1)) * es;
        char* dst = ptr(out) + ((b * H + h) * length + pos) * D * es;
        copy_rows(dst, D * es, src, pool.stride(2) * es, run, D * es);
      }
    }
  });
  return out;
}

void kv_copy_blocks(at::Tensor& pool, const at::Tensor& src, const at::Tensor& dst) {
  TORCH_CHECK(pool.device().is_cpu() && pool.dim() >= 1 && pool.is_contiguous(),
              "pyengine::kv_copy_blocks: pool must be a contiguous CPU tensor [N, ...]");
  const int64_t n = src.numel(), N = pool.size(0);
  const at::Tensor s = per_row_arg(src, n, at::kLong, "kv_copy_blocks", "src");
  const at::Tensor d = per_row_arg(dst, n, at::kLong, "kv_copy_blocks", "dst");
  const int64_t *sp = s.const_data_ptr<int64_t>(), *dp = d.const_data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j)
    TORCH_CHECK(sp[j] >= 0 && sp[j] < N && dp[j] >= 0 && dp[j] < N, "pyengine::kv_copy_blocks: block pair (", sp[j],
                ", ", dp[j], ") is outside the pool of ", N, " blocks");
  const int64_t bytes = pool.numel() / std::max<int64_t>(N, 1) * pool.element_size();
  at::parallel_for(0, n, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) std::memcpy(ptr(pool) + dp[j] * bytes, ptr(pool) + sp[j] * bytes, bytes);
  });
}

// Beam reorder + room for `count` new tokens, on block tables only (spec: ops/kv_cache.kv_block_prepare).
std::tuple<at::Tensor, at::Tensor, at::Tensor> kv_block_prepare(const at::Tensor& table, const at::Tensor& index,
                                                                 int64_t length, int64_t count, int64_t P, int64_t N) {
  const char* op = "kv_block_prepare";
  TORCH_CHECK(P >= 1 && N >= 1 && length >= 0 && count >= 1, "pyengine::", op, ": bad block_size/num_blocks/length/count");
  const int64_t B = table.dim() == 2 ? table.size(0) : 0, M = table.dim() == 2 ? table.size(1) : 0;
  const int64_t used = (length + P - 1) / P, last = (length + count - 1) / P;
  TORCH_CHECK(last < M, "pyengine::", op, ": ", length + count, " tokens need ", last + 1, " blocks per row; the table has ", M);
  const int64_t* t = table_arg(table, B, used, N, op);
  const at::Tensor idx = per_row_arg(index, B, at::kLong, op, "index");
  at::Tensor out = at::full({B, M}, -1, table.options());
  int64_t* o = out.mutable_data_ptr<int64_t>();
  std::vector<char> busy(N, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t from = idx.const_data_ptr<int64_t>()[b];
    TORCH_CHECK(from >= 0 && from < B, "pyengine::", op, ": index[", b, "] = ", from, " is out of range");
    for (int64_t j = 0; j < used; ++j) busy[o[b * M + j] = t[from * M + j]] = 1;
  }
  std::vector<int64_t> src, dst;
  std::vector<char> claimed(N, 0);
  int64_t next_free = 0;
  auto allocate = [&] {
    while (next_free < N && busy[next_free]) ++next_free;
    TORCH_CHECK(next_free < N, "pyengine::", op, ": the pool's ", N, " blocks are exhausted");
    busy[next_free] = 1;
    return next_free;
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = length / P; j <= last; ++j) {
      int64_t& slot = o[b * M + j];
      if (j < used && !claimed[slot]) {  // a partially filled tail this row may keep
        claimed[slot] = 1;
        continue;
      }
      const int64_t fresh = allocate();
      if (j < used) src.push_back(slot), dst.push_back(fresh);  // shared tail: copy on write
      claimed[fresh] = 1;
      slot = fresh;
    }
  }
  auto to_tensor = [&](const std::vector<int64_t>& v) {
    at::Tensor r = at::empty({static_cast<int64_t>(v.size())}, table.options());
    std::copy(v.begin(), v.end(), r.mutable_data_ptr<int64_t>());
    return r;
  };
  return {out, to_tensor(src), to_tensor(dst)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("kv_append", &kv_append);
  m.impl("kv_reorder", &kv_reorder);
  m.impl("kv_append_paged", &kv_append_paged);
  m.impl("kv_gather_paged", &kv_gather_paged);
  m.impl("kv_copy_blocks", &kv_copy_blocks);
  m.impl("kv_block_prepare", &kv_block_prepare);
}

}  // namespace pyengine::cpu
