#include "worker/step_runner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"

namespace tessera {
namespace {

int64_t BlocksFor(int64_t tokens, int block_size) {
  return (tokens + block_size - 1) / block_size;
}

SamplingParams ToSamplingParams(const v1::SeqSampling& s) {
  SamplingParams p;
  p.temperature = s.temperature();
  p.top_k = s.top_k();
  p.top_p = s.top_p();
  p.min_p = s.min_p();
  p.repetition_penalty = s.repetition_penalty();
  p.presence_penalty = s.presence_penalty();
  p.frequency_penalty = s.frequency_penalty();
  p.seed = s.seed();
  return p;
}

absl::Status CheckTokens(uint64_t seq_id, const char* field,
                         const google::protobuf::RepeatedField<int32_t>& ids, int64_t vocab) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("step plan: seq ", seq_id, " ", field, "[",
                                                     i, "] = ", ids[i], " is outside [0, ", vocab,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckBlocks(uint64_t seq_id, const char* field,
                         const google::protobuf::RepeatedField<int32_t>& ids, int num_blocks) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("step plan: seq ", seq_id, " ", field, "[",
                                                     i, "] = ", ids[i],
                                                     " is not a block of this cache [0, ",
                                                     num_blocks, ")"));
    }
  }
  return absl::OkStatus();
}

// Adds the top-n alternatives under the raw distribution (log-softmax of `raw`) to `out`.
// log-softmax(raw)[token].
float RawLogprob(const std::vector<float>& raw, int32_t token) {
  const float max = *std::max_element(raw.begin(), raw.end());
  double sum = 0;
  for (float v : raw) sum += std::exp(static_cast<double>(v - max));
  return static_cast<float>(static_cast<double>(raw[token] - max) - std::log(sum));
}

void AddTopLogprobs(const std::vector<float>& raw, int top_n, v1::SampledToken* out) {
  const float mx = *std::max_element(raw.begin(), raw.end());
  double sum = 0.0;
  for (float v : raw) sum += std::exp(static_cast<double>(v) - mx);
  const float log_z = mx + static_cast<float>(std::log(sum));
  const int n = std::min<int>(top_n, static_cast<int>(raw.size()));
  std::vector<int32_t> idx(raw.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
    return raw[a] != raw[b] ? raw[a] > raw[b] : a < b;
  });
  for (int i = 0; i < n; ++i) {
    v1::TopLogprob* t = out->add_top_logprobs();
    t->set_token_id(idx[i]);
    t->set_logprob(raw[idx[i]] - log_z);
  }
}

}  // namespace

int64_t KvBytesPerBlock(const std::vector<LayerKvSpec>& specs, int block_size) {
  int64_t bytes = 0;
  for (const LayerKvSpec& s : specs) bytes += KvBytesPerToken(s, DType::kF32);
  return bytes * block_size;
}

absl::StatusOr<std::unique_ptr<StepRunner>> StepRunner::Create(std::unique_ptr<Model> model,
                                                               const StepRunnerOptions& options) {
  LoadedModel loaded;
  loaded.model = std::move(model);
  return Create(std::move(loaded), options);
}

absl::StatusOr<std::unique_ptr<StepRunner>> StepRunner::Create(LoadedModel loaded,
                                                               const StepRunnerOptions& options) {
  if (loaded.model == nullptr) return absl::InvalidArgumentError("StepRunner: no model");
  if (options.num_blocks < 1 || options.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StepRunner: num_blocks and block_size must be >= 1, got ", options.num_blocks, " and ",
        options.block_size));
  }
  ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(loaded.model->KvSpecs(), options.num_blocks,
                                                  options.block_size));
  return std::unique_ptr<StepRunner>(new StepRunner(std::move(loaded), std::move(cache), options));
}

StepRunner::StepRunner(LoadedModel loaded, KvCache cache, const StepRunnerOptions& options)
    : loaded_(std::move(loaded)), cache_(std::move(cache)), options_(options) {}

KvCapacity StepRunner::capacity() const {
  return KvCapacity{options_.num_blocks, options_.block_size};
}

const std::vector<float>* StepRunner::LastLogits(uint64_t seq_id) const {
  auto it = last_logits_.find(seq_id);
  return it == last_logits_.end() ? nullptr : &it->second;
}

absl::Status StepRunner::Validate(const v1::StepPlan& plan) const {
  const int64_t vocab = loaded_.model->vocab_size();
  const int bs = options_.block_size;
  absl::flat_hash_set<uint64_t> finished(plan.finished_seq_ids().begin(),
                                         plan.finished_seq_ids().end());
  absl::flat_hash_set<uint64_t> seen;
  for (const v1::NewSeq& s : plan.new_seqs()) {
    const uint64_t id = s.seq_id();
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("step plan: seq ", id, " appears twice in the plan"));
    }
    if (seqs_.contains(id) && !finished.contains(id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("step plan: new seq ", id, " is already running on this worker"));
    }
    const int64_t len = s.token_ids_size();
    if (len == 0) {
      return absl::InvalidArgumentError(absl::StrCat("step plan: new seq ", id, " has no tokens"));
    }
    RETURN_IF_ERROR(CheckTokens(id, "token_ids", s.token_ids(), vocab));
    if (s.num_output_tokens() < 0 || s.num_output_tokens() >= len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step plan: new seq ", id, " num_output_tokens ", s.num_output_tokens(),
          " must be in [0, ", len, ") (the context has ", len, " tokens)"));
    }
    if (s.num_computed_tokens() < 0 || s.num_scheduled_tokens() < 0 ||
        s.num_computed_tokens() + s.num_scheduled_tokens() > len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step plan: new seq ", id, " num_computed_tokens ", s.num_computed_tokens(),
          " + num_scheduled_tokens ", s.num_scheduled_tokens(), " exceeds its ", len,
          " context tokens (or is negative)"));
    }
    RETURN_IF_ERROR(CheckBlocks(id, "block_ids", s.block_ids(), options_.num_blocks));
    const int64_t need = BlocksFor(s.num_computed_tokens() + s.num_scheduled_tokens(), bs);
    if (s.block_ids_size() < need) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step plan: new seq ", id, " has ", s.block_ids_size(), " blocks but needs ", need,
          " for ", s.num_computed_tokens() + s.num_scheduled_tokens(), " tokens"));
    }
    const v1::SeqSampling& sp = s.sampling();
    if (sp.num_top_logprobs() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("step plan: new seq ", id, " sampling.num_top_logprobs is negative"));
    }
    absl::Status st = ValidateSamplingParams(ToSamplingParams(sp));
    if (!st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("step plan: new seq ", id, " sampling: ", st.message()));
    }
  }
  for (const v1::CachedSeq& s : plan.cached_seqs()) {
    const uint64_t id = s.seq_id();
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("step plan: seq ", id, " appears twice in the plan"));
    }
    auto it = seqs_.find(id);
    if (it == seqs_.end() || finished.contains(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "step plan: cached seq ", id, " is not running on this worker (it was never sent as a "
          "new seq, or it was finished)"));
    }
    const Sequence& seq = it->second;
    RETURN_IF_ERROR(CheckTokens(id, "append_token_ids", s.append_token_ids(), vocab));
    RETURN_IF_ERROR(CheckBlocks(id, "new_block_ids", s.new_block_ids(), options_.num_blocks));
    const int64_t len = static_cast<int64_t>(seq.tokens.size()) + s.append_token_ids_size();
    if (s.num_scheduled_tokens() < 0 || seq.num_computed + s.num_scheduled_tokens() > len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step plan: cached seq ", id, " schedules ", s.num_scheduled_tokens(),
          " tokens but only ", len - seq.num_computed, " are not computed yet"));
    }
    const int64_t blocks = static_cast<int64_t>(seq.blocks.size()) + s.new_block_ids_size();
    const int64_t need = BlocksFor(seq.num_computed + s.num_scheduled_tokens(), bs);
    if (blocks < need) {
      return absl::InvalidArgumentError(absl::StrCat("step plan: cached seq ", id, " has ",
                                                     blocks, " blocks but needs ", need));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StepResult> StepRunner::Execute(const v1::StepPlan& plan) {
  RETURN_IF_ERROR(Validate(plan));
  last_logits_.clear();
  for (uint64_t id : plan.finished_seq_ids()) seqs_.erase(id);

  struct Scheduled {
    uint64_t id;
    Sequence* seq;
    int64_t start;
    int64_t count;
  };
  std::vector<Scheduled> sched;
  for (const v1::NewSeq& s : plan.new_seqs()) {
    Sequence seq;
    seq.tokens.assign(s.token_ids().begin(), s.token_ids().end());
    seq.num_outputs = s.num_output_tokens();
    seq.num_computed = s.num_computed_tokens();
    seq.blocks.assign(s.block_ids().begin(), s.block_ids().end());
    seq.sampling = ToSamplingParams(s.sampling());
    seq.num_top_logprobs = s.sampling().num_top_logprobs();
    seq.min_tokens = s.sampling().min_tokens();
    seq.min_tokens_banned_ids.assign(s.sampling().min_tokens_banned_ids().begin(),
                                     s.sampling().min_tokens_banned_ids().end());
    Sequence& ref = seqs_[s.seq_id()] = std::move(seq);
    if (s.num_scheduled_tokens() > 0) {
      sched.push_back({s.seq_id(), &ref, ref.num_computed, s.num_scheduled_tokens()});
    }
  }
  for (const v1::CachedSeq& s : plan.cached_seqs()) {
    Sequence& seq = seqs_.at(s.seq_id());
    seq.tokens.insert(seq.tokens.end(), s.append_token_ids().begin(), s.append_token_ids().end());
    seq.num_outputs += s.append_token_ids_size();
    seq.blocks.insert(seq.blocks.end(), s.new_block_ids().begin(), s.new_block_ids().end());
    if (s.num_scheduled_tokens() > 0) {
      sched.push_back({s.seq_id(), &seq, seq.num_computed, s.num_scheduled_tokens()});
    }
  }

  v1::StepResult result;
  result.set_step_id(plan.step_id());
  if (sched.empty()) {
    // A data-parallel-attention rank with nothing to run still joins the other DP ranks' MoE
    // dispatch / combine (a no-op for other models).
    RETURN_IF_ERROR(loaded_.model->ForwardIdle());
    return result;
  }
  const auto t0 = std::chrono::steady_clock::now();

  const int num_seqs = static_cast<int>(sched.size());
  std::vector<BatchSeq> parts;
  int prefill_tokens = 0, decode_tokens = 0;
  for (const Scheduled& sc : sched) {
    parts.push_back({sc.seq->tokens, {}, sc.seq->blocks, sc.start, sc.count});
    const int64_t prompt_len = static_cast<int64_t>(sc.seq->tokens.size()) - sc.seq->num_outputs;
    const int64_t prefill = std::clamp<int64_t>(prompt_len - sc.start, 0, sc.count);
    prefill_tokens += static_cast<int>(prefill);
    decode_tokens += static_cast<int>(sc.count - prefill);
  }
  Tensor ids;
  AttentionBatch batch;
  RETURN_IF_ERROR(BuildAttentionBatch(parts, options_.block_size, ids, batch));

  Tensor logits;
  RETURN_IF_ERROR(loaded_.model->Forward(ids, batch, cache_, logits));
  const int64_t vocab = logits.dim(1);
  std::vector<float> raw;
  for (int s = 0; s < num_seqs; ++s) {
    Sequence& seq = *sched[s].seq;
    seq.num_computed = sched[s].start + sched[s].count;
    if (seq.num_computed < static_cast<int64_t>(seq.tokens.size())) continue;  // chunk pending
    Tensor row_logits = logits.Select(0, s);
    // Sample() rewrites the row (penalties, temperature): keep the raw logits only when needed.
    const bool ban = seq.num_outputs < seq.min_tokens && !seq.min_tokens_banned_ids.empty();
    const bool need_raw = seq.num_top_logprobs > 0 || options_.keep_logits || ban;
    if (need_raw) raw.assign(row_logits.data<float>(), row_logits.data<float>() + vocab);
    if (ban) {  // min_tokens: EOS and stop ids cannot be sampled yet
      float* row = row_logits.data<float>();
      for (int32_t id : seq.min_tokens_banned_ids) {
        if (id >= 0 && id < vocab) row[id] = -std::numeric_limits<float>::infinity();
      }
    }
    const int64_t prompt_len = static_cast<int64_t>(seq.tokens.size()) - seq.num_outputs;
    absl::Span<const int32_t> all(seq.tokens);
    // Seeds are always set by the coordinator, so the fallback draw is never used.
    ASSIGN_OR_RETURN(SampleResult r, Sample(row_logits, seq.sampling, all.subspan(0, prompt_len),
                                            all.subspan(prompt_len),
                                            static_cast<uint64_t>(seq.num_outputs), 0.5));
    v1::SampledToken* out = result.add_sampled();
    out->set_seq_id(sched[s].id);
    out->set_token_id(r.token);
    // Sample's logprob is under the distribution it was given: the raw model's, unless ids were
    // banned above; then it is recomputed from the raw logits.
    out->set_logprob(ban ? RawLogprob(raw, r.token) : r.logprob);
    if (seq.num_top_logprobs > 0) AddTopLogprobs(raw, seq.num_top_logprobs, out);
    if (options_.keep_logits) last_logits_[sched[s].id] = raw;
  }
  result.set_num_prefill_tokens(prefill_tokens);
  result.set_num_decode_tokens(decode_tokens);
  result.set_forward_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return result;
}

}  // namespace tessera
