// CPU launchers for the incremental no-repeat-n-gram table (kernels: csrc/include/pyengine/ngram.h).
#include "common.h"
#include "pyengine/ngram.h"

namespace pyengine::cpu {
namespace {

// The table's slot count C from its [B, 1 + 2C] shape, checked.
int64_t table_capacity(const at::Tensor& table, int64_t B, const char* op) {
  TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == at::kLong && table.dim() == 2 &&
                  table.size(0) == B && table.is_contiguous(),
              "pyengine::", op, ": table must be a contiguous int64 [B, 1 + 2C] CPU tensor from ngram_table_init, got ",
              table.scalar_type(), " ", table.sizes());
  const int64_t C = (table.size(1) - 1) / 2;
  TORCH_CHECK(C >= 1 && (C & (C - 1)) == 0 && table.size(1) == 1 + 2 * C, "pyengine::", op,
              ": table width must be 1 + 2C with C a power of two, got ", table.size(1));
  return C;
}

void ngram_table_add(at::Tensor& table, const at::Tensor& tokens, int64_t n) {
  TORCH_CHECK(n >= 1, "pyengine::ngram_table_add: ngram_size must be >= 1, got ", n);
  const int64_t B = tokens.dim() == 2 ? tokens.size(0) : -1;
  const int64_t C = table_capacity(table, B, "ngram_table_add");
  const at::Tensor tok = tokens_arg(tokens, B, std::numeric_limits<int64_t>::max(), "ngram_table_add");
  const int64_t T = tok.size(1);
  int64_t* tb = table.mutable_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t done = tb[b * (1 + 2 * C)];
    TORCH_CHECK(done <= std::max<int64_t>(T - n + 1, 0), "pyengine::ngram_table_add: row ", b, " already records ",
                done, " n-grams but the history has only ", T, " tokens (a table belongs to one generation)");
    TORCH_CHECK(T - n + 1 <= C / 2, "pyengine::ngram_table_add: ", T, " tokens exceed the table's capacity; create it ",
                "with ngram_table_init(batch, max_len >= ", T, ")");
  }
  parallel_rows(B, 64 * T, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      ngram_add_row(tb + b * (1 + 2 * C), C, tok.const_data_ptr<int64_t>() + b * tok.stride(0), T, n);
  });
}

at::Tensor ngram_ban(const at::Tensor& scores, const at::Tensor& table, const at::Tensor& tokens, int64_t n) {
  const at::Tensor s = scores_arg(scores, "ngram_ban");
  TORCH_CHECK(n >= 1, "pyengine::ngram_ban: ngram_size must be >= 1, got ", n);
  const int64_t B = s.size(0), V = s.size(1);
  const int64_t C = table_capacity(table, B, "ngram_ban");
  const at::Tensor tok = tokens_arg(tokens, B, V, "ngram_ban");
  const int64_t T = tok.size(1);
  const int64_t* tb = table.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(tb[b * (1 + 2 * C)] <= std::max<int64_t>(T - n + 1, 0), "pyengine::ngram_ban: row ", b,
                " of the table records more n-grams than the history holds");
  at::Tensor out = s.clone();
  float* o = out.mutable_data_ptr<float>();
  parallel_rows(B, V, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      ngram_ban_row(o + b * V, tb + b * (1 + 2 * C), C, tok.const_data_ptr<int64_t>() + b * tok.stride(0), T, n);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) {
  m.impl("ngram_table_add", &ngram_table_add);
  m.impl("ngram_ban", &ngram_ban);
}

}  // namespace pyengine::cpu
