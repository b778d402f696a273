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
  m.def("sample_from_scores(Tensor scores, Generator? generator) -> Tensor");
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
  // decode-step kernels of the PyTorch models (pyengine/backends/torch/decode.py holds the references)
  m.def(
      "linear_into(Tensor(a!) out, Tensor x, Tensor[] weights, Tensor[] scales, Tensor[] biases, bool accumulate, "
      "bool weight_kn) -> ()");
  m.def(
      "top_logits(Tensor(a!) out, Tensor x, Tensor q, Tensor scale, Tensor slack, Tensor weight, int k) -> int");
  m.def("top_logits_screen(Tensor weight) -> (Tensor, Tensor, Tensor)");
  m.def("rms_norm_into(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.def("layer_norm_into(Tensor(a!) out, Tensor x, Tensor weight, Tensor bias, float eps) -> ()");
  m.def(
      "decode_attention(Tensor(a!) out, Tensor qkv, Tensor(b!) key_cache, Tensor(c!) value_cache, Tensor? cos, "
      "Tensor? sin, Tensor positions, int length, Tensor? key_mask, int num_heads, float scale, Tensor? rows=None) -> ()");
  m.def(
      "decode_layers(Tensor(a!) x, Tensor(b!) h, Tensor(c!) qkv, Tensor(d!) attn, Tensor(e!) gate_up, "
      "Tensor[] norm_in, Tensor[] norm_post, Tensor[] norm_in_b, Tensor[] norm_post_b, float eps, str activation, "
      "bool weight_kn, Tensor[] qkv_w, Tensor[] qkv_s, Tensor[] qkv_b, Tensor[] o_w, "
      "Tensor[] o_s, Tensor[] o_b, Tensor[] gate_up_w, Tensor[] gate_up_s, Tensor[] gate_up_b, Tensor[] down_w, "
      "Tensor[] down_s, Tensor[] down_b, Tensor(f!)[] key_cache, Tensor(g!)[] value_cache, Tensor? cos, Tensor? sin, "
      "Tensor positions, int length, Tensor? key_mask, int num_heads, float[] scale, Tensor? rows=None, "
      "Tensor? block_table=None, Tensor? context_lens=None, Tensor? write_slots=None) -> ()");
  // issue 7: attention through the batch engine's block tables (pyengine/batch/paged_attention.py)
  m.def(
      "paged_attention(Tensor query, Tensor key_pool, Tensor value_pool, Tensor block_table, Tensor context_lens, "
      "Tensor query_lens, float scale) -> Tensor");
  // issue 4: beam search step and beam KV reordering (pyengine/ops/beam.py)
  m.def(
      "beam_step(Tensor logits, Tensor(a!) running, Tensor(b!) running_scores, Tensor(c!) running_idx, "
      "Tensor(d!) sequences, Tensor(e!) beam_scores, Tensor(f!) beam_idx, Tensor(g!) is_finished, "
      "Tensor(h!) improvable, int cur_len, int prompt_len, float penalty, int min_len, int[] eos_token_ids, "
      "int[] banned_ids, float length_penalty, int early_stopping, bool stop_all, bool log_softmax, "
      "Tensor(i!)? scores_out) -> (Tensor, bool)");
  m.def("kv_reorder_suffix(Tensor(a!)[] caches, Tensor index, Tensor start, int length) -> ()");
  // the penalties into `out` (out = scores: in place, the engine's own buffer; pyengine/ops/logits.py)
  m.def("repetition_penalty.out(Tensor scores, Tensor tokens, float penalty, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("min_length.out(Tensor scores, int cur_len, int min_len, int[] eos_token_ids, *, Tensor(a!) out) -> Tensor(a!)");
  m.def(
      "bad_words.out(Tensor scores, Tensor tokens, int[] words_flat, int[] word_lengths, *, Tensor(a!) out) "
      "-> Tensor(a!)");
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
