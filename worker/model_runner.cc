#include "worker/model_runner.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    std::unique_ptr<Model> model, const ModelRunnerOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("ModelRunner: null model");
  if (options.max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(absl::StrCat("ModelRunner: max_tokens_per_step must be >= 1, got ",
                                                   options.max_tokens_per_step));
  }
  std::vector<LayerKvSpec> specs = model->KvSpecs();
  ASSIGN_OR_RETURN(KvCache cache,
                   KvCache::Create(specs, options.num_blocks, options.block_size));
  return std::unique_ptr<ModelRunner>(new ModelRunner(std::move(model), std::move(cache),
                                                      options));
}

ModelRunner::ModelRunner(std::unique_ptr<Model> model, KvCache cache,
                         const ModelRunnerOptions& options)
    : model_(std::move(model)),
      cache_(std::move(cache)),
      allocator_(options.num_blocks),
      options_(options),
      rng_(options.seed) {}

absl::Status ModelRunner::AddSequence(int64_t seq_id, std::vector<int32_t> prompt,
                                      const SamplingParams& params) {
  if (seqs_.contains(seq_id)) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", seq_id, " already exists"));
  }
  if (prompt.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", seq_id, ": empty prompt"));
  }
  const int64_t vocab = model_->vocab_size();
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq_id, ": prompt token ", i,
                                                     " = ", prompt[i], " is outside [0, ",
                                                     vocab, ")"));
    }
  }
  RETURN_IF_ERROR(ValidateSamplingParams(params));
  Sequence seq;
  seq.id = seq_id;
  seq.prompt = std::move(prompt);
  seq.params = params;
  seqs_.emplace(seq_id, std::move(seq));
  order_.push_back(seq_id);
  return absl::OkStatus();
}

absl::Status ModelRunner::RemoveSequence(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq_id, " not found"));
  }
  allocator_.Free(it->second.blocks);
  seqs_.erase(it);
  order_.erase(std::find(order_.begin(), order_.end(), seq_id));
  return absl::OkStatus();
}

std::vector<int32_t> ModelRunner::OutputTokens(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? std::vector<int32_t>{} : it->second.output;
}

absl::StatusOr<std::vector<StepOutput>> ModelRunner::Step() {
  last_prefill_tokens_ = last_decode_tokens_ = 0;
  // Schedule: decodes first (one token each), then prefill chunks within the token budget.
  struct Scheduled {
    Sequence* seq;
    int64_t start;  // first position computed this step
    int64_t count;
  };
  std::vector<Scheduled> sched;
  int budget = options_.max_tokens_per_step;
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (int64_t id : order_) {
      if (budget == 0) break;
      Sequence& s = seqs_.at(id);
      const int64_t pending = s.total() - s.num_computed;
      if (pending <= 0) continue;
      const bool decoding = s.num_computed >= static_cast<int64_t>(s.prompt.size());
      if ((pass == 0) != decoding) continue;
      const int64_t count = std::min<int64_t>(pending, budget);
      sched.push_back({&s, s.num_computed, count});
      budget -= static_cast<int>(count);
      if (decoding) {
        last_decode_tokens_ += static_cast<int>(count);
      } else {
        last_prefill_tokens_ += static_cast<int>(count);
      }
    }
  }
  if (sched.empty()) return std::vector<StepOutput>{};

  // Blocks: all or nothing.
  const int bs = options_.block_size;
  int needed = 0;
  for (const Scheduled& sc : sched) {
    const int64_t blocks = (sc.start + sc.count + bs - 1) / bs;
    needed += static_cast<int>(std::max<int64_t>(0, blocks - sc.seq->blocks.size()));
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> fresh, allocator_.Allocate(needed));
  size_t next_fresh = 0;
  for (Scheduled& sc : sched) {
    const size_t blocks = static_cast<size_t>((sc.start + sc.count + bs - 1) / bs);
    while (sc.seq->blocks.size() < blocks) sc.seq->blocks.push_back(fresh[next_fresh++]);
  }

  // AttentionBatch.
  const int num_seqs = static_cast<int>(sched.size());
  std::vector<BatchSeq> parts;
  for (const Scheduled& sc : sched) {
    parts.push_back({sc.seq->prompt, sc.seq->output, sc.seq->blocks, sc.start, sc.count});
  }
  Tensor ids;
  AttentionBatch batch;
  RETURN_IF_ERROR(BuildAttentionBatch(parts, bs, ids, batch));

  Tensor logits;
  RETURN_IF_ERROR(model_->Forward(ids, batch, cache_, logits));
  const int64_t vocab = logits.dim(1);

  std::vector<StepOutput> outputs;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int s = 0; s < num_seqs; ++s) {
    Sequence& seq = *sched[s].seq;
    seq.num_computed = sched[s].start + sched[s].count;
    if (seq.num_computed < seq.total()) continue;  // prefill chunk not finished
    Tensor row_logits = logits.Select(0, s);
    StepOutput out;
    out.seq_id = seq.id;
    if (options_.return_logits) {
      const float* p = row_logits.data<float>();
      out.logits.assign(p, p + vocab);
    }
    const double fallback = uniform(rng_);
    ASSIGN_OR_RETURN(SampleResult r, Sample(row_logits, seq.params, seq.prompt, seq.output,
                                            seq.output.size(), fallback));
    out.token = r.token;
    out.logprob = r.logprob;
    seq.output.push_back(r.token);
    outputs.push_back(std::move(out));
  }
  return outputs;
}

}  // namespace tessera
