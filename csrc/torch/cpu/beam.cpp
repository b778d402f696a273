// CPU launcher for beam_step (spec: pyengine/ops/beam.py; math: csrc/include/pyengine/beam.h).
//
// Two parallel phases: rows (B*K, the expensive part: log-softmax, processors and each row's best K2),
// then batch items (merge of their K row lists and the bookkeeping, a few hundred bytes each). The
// beam state tensors are updated in place; nothing the size of the logits is allocated.
#include <tuple>

#include "common.h"
#include "pyengine/beam.h"

namespace pyengine::cpu {
namespace {

void state_arg(const at::Tensor& t, at::ScalarType dtype, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous() && t.sizes() == shape,
              "pyengine::beam_step: ", name, " must be a contiguous ", dtype, " CPU tensor of shape ", shape, ", got ",
              t.scalar_type(), " ", t.sizes(), " on ", t.device(), t.is_contiguous() ? "" : " (not contiguous)");
}

std::tuple<at::Tensor, bool> beam_step(const at::Tensor& logits, at::Tensor& running, at::Tensor& running_scores,
                                       at::Tensor& running_idx, at::Tensor& sequences, at::Tensor& beam_scores,
                                       at::Tensor& beam_idx, at::Tensor& is_finished, at::Tensor& improvable,
                                       int64_t cur, int64_t S, double penalty, int64_t min_len, at::IntArrayRef eos,
                                       at::IntArrayRef banned, double length_penalty, int64_t mode, bool stop_all,
                                       bool log_softmax, const std::optional<at::Tensor>& scores_out) {
  const char* op = "beam_step";
  const at::Tensor x = scores_arg(logits, op);
  TORCH_CHECK(running.dim() == 3, "pyengine::beam_step: running must be [B, K, T], got ", running.sizes());
  const int64_t B = running.size(0), K = running.size(1), T = running.size(2), V = x.size(1), N = B * K;
  const int64_t K2 = std::max<int64_t>(2, 1 + static_cast<int64_t>(eos.size())) * K, G = T - S;
  TORCH_CHECK(x.size(0) == N, "pyengine::beam_step: logits has ", x.size(0), " rows, the state B*K = ", N);
  TORCH_CHECK(S >= 0 && S <= cur && cur < T, "pyengine::beam_step: need prompt_len <= cur_len < max_length, got ",
              S, ", ", cur, ", ", T);
  TORCH_CHECK(K * V >= K2, "pyengine::beam_step: ", K2, " candidates per step need num_beams * vocab >= ", K2);
  TORCH_CHECK(mode >= 0 && mode <= 2, "pyengine::beam_step: early_stopping mode must be 0, 1 or 2, got ", mode);
  state_arg(running, at::kLong, {B, K, T}, "running");
  state_arg(running_scores, at::kFloat, {B, K}, "running_scores");
  state_arg(running_idx, at::kLong, {B, K, G}, "running_idx");
  state_arg(sequences, at::kLong, {B, K, T}, "sequences");
  state_arg(beam_scores, at::kFloat, {B, K}, "beam_scores");
  state_arg(beam_idx, at::kLong, {B, K, G}, "beam_idx");
  state_arg(is_finished, at::kBool, {B, K}, "is_finished");
  state_arg(improvable, at::kBool, {B}, "improvable");
  if (scores_out.has_value()) state_arg(*scores_out, at::kFloat, {N, V}, "scores_out");
  ids_arg(banned, V, op, "banned");
  const int64_t* run = running.const_data_ptr<int64_t>();
  if (penalty != 1.0)  // the history indexes the row
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < cur; ++t)
        TORCH_CHECK(run[n * T + t] >= 0 && run[n * T + t] < V, "pyengine::beam_step: token id ", run[n * T + t],
                    " in the history of row ", n, " is out of range for a vocabulary of ", V);
  std::vector<int64_t> ban(banned.begin(), banned.end());
  if (cur < min_len)
    for (int64_t e : eos)
      if (e >= 0 && e < V) ban.push_back(e);  // an EOS outside the vocabulary never comes

  // Phase 1, per row: processed log-probs and the row's best K2 candidates.
  std::vector<Cand> row_best(N * K2);
  std::vector<int64_t> row_count(N);  // < K2 when V < K2
  const float* xp = x.const_data_ptr<float>();
  const float* rs = running_scores.const_data_ptr<float>();
  float* out = scores_out.has_value() ? scores_out->mutable_data_ptr<float>() : nullptr;
  parallel_rows(N, V, [&](int64_t n0, int64_t n1) {
    std::vector<float> scratch(out ? 0 : V);
    std::vector<float> seen;
    TopN top(K2);
    for (int64_t n = n0; n < n1; ++n) {
      float* lp = out ? out + n * V : scratch.data();
      if (log_softmax) {
        log_softmax_row(xp + n * V, lp, V);
      } else {
        std::memcpy(lp, xp + n * V, V * sizeof(float));
      }
      beam_processors_row(lp, run + n * T, cur, static_cast<float>(penalty), ban.data(), ban.size(), seen);
      top.clear();
      row_candidates(lp, V, rs[n], (n % K) * V, top);
      std::copy(top.items().begin(), top.items().end(), row_best.begin() + n * K2);
      row_count[n] = static_cast<int64_t>(top.items().size());
    }
  });

  // Phase 2, per batch item: merge the K row lists, then the bookkeeping.
  at::Tensor parent = at::empty({N}, running.options());
  std::vector<BeamItemStatus> status(B);
  const BeamStepParams p{K, K2, V, T, S, cur, length_penalty, mode, stop_all, eos.data(),
                         static_cast<int64_t>(eos.size())};
  at::parallel_for(0, B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::vector<Cand> merged;
      for (int64_t n = b * K; n < (b + 1) * K; ++n)
        merged.insert(merged.end(), row_best.begin() + n * K2, row_best.begin() + n * K2 + row_count[n]);
      std::partial_sort(merged.begin(), merged.begin() + K2, merged.end(), better);
      const BeamItem item{running.mutable_data_ptr<int64_t>() + b * K * T,
                          running_scores.mutable_data_ptr<float>() + b * K,
                          running_idx.mutable_data_ptr<int64_t>() + b * K * G,
                          sequences.mutable_data_ptr<int64_t>() + b * K * T,
                          beam_scores.mutable_data_ptr<float>() + b * K,
                          beam_idx.mutable_data_ptr<int64_t>() + b * K * G,
                          is_finished.mutable_data_ptr<bool>() + b * K,
                          improvable.mutable_data_ptr<bool>() + b};
      status[b] = beam_update(item, merged.data(), b, p, parent.mutable_data_ptr<int64_t>() + b * K);
    }
  });
  bool can_improve = false, all_finished = true, all_hit = true;
  for (const auto& st : status) {
    can_improve = can_improve || st.improvable;
    all_finished = all_finished && st.all_finished;
    all_hit = all_hit && st.all_hit;
  }
  const bool done = !(can_improve && !(all_finished && mode == 1) && !all_hit);
  return {parent, done};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyengine, CPU, m) { m.impl("beam_step", &beam_step); }

}  // namespace pyengine::cpu
