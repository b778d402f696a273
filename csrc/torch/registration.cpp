// Every pyengine op schema, in one list, plus the Python module `pyengine._C` (build info only).
//
// The kernels register per device in csrc/torch/cpu/*.cpp (TORCH_LIBRARY_IMPL(pyengine, CPU, m)). The
// Python wrappers with argument handling and fake (meta) implementations are in
// pyengine/backends/torch/cpp.py; the meaning of each op is its NumPy reference in pyengine/ops/.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(pyengine, m) {
  // logits processors (pyengine/ops/logits.py): new tensor out, inputs untouched
  m.def("temperature(Tensor scores, float temperature) -> Tensor");
  m.def("repetition_penalty(Tensor scores, Tensor tokens, float penalty) -> Tensor");
  m.def("min_length(Tensor scores, int cur_len, int min_len, int[] eos_token_ids) -> Tensor");
  m.def("no_repeat_ngram(Tensor scores, Tensor tokens, int ngram_size) -> Tensor");
  m.def("bad_words(Tensor scores, Tensor tokens, int[] words_flat, int[] word_lengths) -> Tensor");
  m.def("inf_nan_remove(Tensor scores) -> Tensor");
  // warpers and selection (pyengine/ops/sampling.py)
  m.def("top_k_mask(Tensor scores, int top_k, float filter_value, int min_tokens_to_keep) -> Tensor");
  m.def("top_p_mask(Tensor scores, float top_p, float filter_value, int min_tokens_to_keep) -> Tensor");
  m.def("min_p_mask(Tensor scores, float min_p, float filter_value, int min_tokens_to_keep) -> Tensor");
  m.def("argmax(Tensor scores) -> Tensor");
  // counter-based noise and fused selection (pyengine/ops/random.py, pyengine/ops/fused.py)
  m.def("uniform(Tensor seed, Tensor step, Tensor row_key) -> Tensor");
  m.def(
      "fused_sample(Tensor scores, Tensor tokens, Tensor cur_len, Tensor penalty, Tensor min_len, "
      "int[] eos_token_ids, int[] banned_ids, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
      "Tensor seed, Tensor step, int min_tokens_to_keep) -> Tensor");
  m.def(
      "fused_argmax(Tensor scores, Tensor tokens, Tensor cur_len, Tensor penalty, Tensor min_len, "
      "int[] eos_token_ids, int[] banned_ids) -> Tensor");
  // incremental no-repeat-n-gram state (pyengine/ops/ngram.py)
  m.def("ngram_table_add(Tensor(a!) table, Tensor tokens, int ngram_size) -> ()");
  m.def("ngram_ban(Tensor scores, Tensor table, Tensor tokens, int ngram_size) -> Tensor");
  // KV cache (pyengine/ops/kv_cache.py)
  m.def("kv_append(Tensor(a!) cache, Tensor values, int start) -> ()");
  m.def("kv_reorder(Tensor(a!) cache, Tensor index) -> ()");
  m.def("kv_append_paged(Tensor(a!) pool, Tensor block_table, Tensor values, int start) -> ()");
  m.def("kv_gather_paged(Tensor pool, Tensor block_table, int length) -> Tensor");
  m.def("kv_copy_blocks(Tensor(a!) pool, Tensor src, Tensor dst) -> ()");
  m.def(
      "kv_block_prepare(Tensor block_table, Tensor index, int length, int count, int block_size, int num_blocks) "
      "-> (Tensor, Tensor, Tensor)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  pybind11::list isa;
#if defined(__AVX512F__)
  isa.append("avx512f");
#endif
#if defined(__AVX512VL__)
  isa.append("avx512vl");
#endif
#if defined(__AVX2__)
  isa.append("avx2");
#endif
#if defined(__FMA__)
  isa.append("fma");
#endif
  info["isa"] = isa;
#if defined(_OPENMP)
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["compiler"] = __VERSION__;
  info["cuda"] = false;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyengine native kernels: the ops live in torch.ops.pyengine; this module carries build info.";
  m.def("build_info", &build_info, "Compiled ISA extensions, OpenMP, compiler version.");
}
