// CPU launcher for kv_reorder_suffix (spec: pyengine/ops/beam.py): beam KV reordering that moves only
// the positions where a row's ancestry and its new parent's differ.
//
// Every cache is [B, H, T, D] (one per layer, keys and values); row r takes positions [start[r], length)
// of row index[r]. A source row that is itself rewritten is staged first; the others are copied in
// place. The bytes moved are the divergent suffixes (plus the staged ones once more) and nothing else:
// no full row, no unused capacity. The caches are independent: they run in parallel.
#include <cstring>

#include "common.h"

namespace pyengine::cpu {
namespace {

void kv_reorder_suffix(at::TensorList caches, const at::Tensor& index, const at::Tensor& start, int64_t length) {
  const char* op = "kv_reorder_suffix";
  if (caches.empty()) return;
  const int64_t B = caches[0].size(0);
  const at::Tensor idx = per_row_arg(index, B, at::kLong, op, "index");
  const at::Tensor st = per_row_arg(start, B, at::kLong, op, "start");
  const int64_t* ip = idx.const_data_ptr<int64_t>();
  const int64_t* sp = st.const_data_ptr<int64_t>();
  for (const at::Tensor& c : caches) {
    TORCH_CHECK(c.device().is_cpu() && c.dim() == 4 && c.is_contiguous() && c.size(0) == B, "pyengine::", op,
                ": every cache must be a contiguous [B, H, T, D] CPU tensor with B = ", B, ", got ", c.sizes());
    TORCH_CHECK(length >= 0 && length <= c.size(2), "pyengine::", op, ": length ", length,
                " is outside a cache of ", c.size(2), " positions");
  }
  std::vector<int64_t> moved;  // rows that change: another source and a non-empty suffix
  for (int64_t r = 0; r < B; ++r) {
    TORCH_CHECK(ip[r] >= 0 && ip[r] < B, "pyengine::", op, ": index[", r, "] = ", ip[r], " is out of range");
    TORCH_CHECK(sp[r] >= 0 && sp[r] <= length, "pyengine::", op, ": start[", r, "] = ", sp[r], " is outside [0, ",
                length, "]");
    if (ip[r] != r && sp[r] < length) moved.push_back(r);
  }
  if (moved.empty()) return;
  // A source that is itself rewritten is staged first; the others are read in place.
  std::vector<char> rewritten(B, 0);
  for (int64_t r : moved) rewritten[r] = 1;
  at::parallel_for(0, static_cast<int64_t>(caches.size()), 1, [&](int64_t c0, int64_t c1) {
    std::vector<char> staged;
    for (int64_t c = c0; c < c1; ++c) {
      const at::Tensor& cache = caches[c];
      const int64_t H = cache.size(1), T = cache.size(2), D = cache.size(3), es = cache.element_size();
      char* base = static_cast<char*>(cache.data_ptr());
      const int64_t pos_bytes = D * es, head_bytes = T * pos_bytes, row_bytes = H * head_bytes;
      auto at = [&](int64_t row, int64_t h, int64_t pos) {
        return base + row * row_bytes + h * head_bytes + pos * pos_bytes;
      };
      int64_t total = 0;
      for (int64_t r : moved) total += rewritten[ip[r]] ? H * (length - sp[r]) * pos_bytes : 0;
      staged.resize(total);
      char* out = staged.data();
      for (int64_t r : moved)
        if (rewritten[ip[r]])
          for (int64_t h = 0; h < H; ++h, out += (length - sp[r]) * pos_bytes)
            std::memcpy(out, at(ip[r], h, sp[r]), (length - sp[r]) * pos_bytes);
      const char* in = staged.data();
      for (int64_t r : moved)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t n = (length - sp[r]) * pos_bytes;
          if (rewritten[ip[r]]) {
            std::memcpy(at(r, h, sp[r]), in, n);
            in += n;
          } else {
            std::memcpy(at(r, h, sp[r]), at(ip[r], h, sp[r]), n);
          }
        }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("kv_reorder_suffix", &kv_reorder_suffix); }

}  // namespace pyengine::cpu
