// KV-cache copies (spec: pyengine/ops/kv_cache.py): dense append, paged append/gather, block copies.
//
// Beam search without copying every layer's cache each step: the cache lives in fixed-size blocks of P
// tokens addressed through a block table [B, M]. Reordering beams gathers table rows (B*M ints, once per
// step for all layers); full blocks are then shared read-only, and only a row's partially filled tail
// block is copied when another row shares it (copy-on-write, at most B blocks of P tokens per layer).
// Everything here moves bytes: element type does not matter, only its size.
#pragma once

#include <cstdint>
#include <cstring>

namespace pyengine {

// Copies `rows` rows of `row_bytes` bytes between two strided layouts.
inline void copy_rows(char* dst, int64_t dst_stride, const char* src, int64_t src_stride, int64_t rows,
                      int64_t row_bytes) {
  if (dst_stride == row_bytes && src_stride == row_bytes) {
    std::memcpy(dst, src, rows * row_bytes);  // one contiguous run: the common case
    return;
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_stride, src + r * src_stride, row_bytes);
}

}  // namespace pyengine
