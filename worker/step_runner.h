// StepRunner: executes the coordinator's step plans (proto/tessera/v1/step.proto) on a model loaded
// in this process, with a paged KV cache whose blocks the coordinator allocates.
//
// This is the worker side of the step protocol (DESIGN.md section 3) and the in-process
// StepExecutor (worker/step_executor.h) used by `tessera generate` and tests. It keeps, per
// seq_id, the context token ids, the block table, the sampling parameters, how many tokens have
// their KV in the cache and how many trailing context tokens are outputs. Each Execute():
//   1. validates the whole plan against that state before changing anything (unknown or duplicate
//      sequences, token ids outside the vocabulary, block ids outside the cache, block tables too
//      short for the scheduled tokens, more tokens scheduled than the context holds, invalid
//      sampling) — a bad plan is INVALID_ARGUMENT / FAILED_PRECONDITION naming the sequence and
//      field, and leaves the state untouched;
//   2. drops finished sequences (unknown finished ids are ignored: releasing is idempotent), adds
//      the new ones, appends tokens and blocks to the cached ones;
//   3. runs one forward pass over the scheduled tokens (new_seqs, then cached_seqs, in plan order;
//      sequences with nothing scheduled are left out) and samples one token for every sequence
//      whose whole context now has its KV in the cache. The sampled token is NOT appended: the
//      coordinator sends it back in the next plan's append_token_ids.
// Sampling uses kernels' Sample with the sequence's seed and sample index = number of outputs so
// far, so a sequence preempted and recomputed samples exactly the same tokens. Logprobs are those
// of the raw model distribution (log-softmax of the logits before penalties and temperature).
// Cache blocks are never cleared when a sequence leaves: the coordinator may hand them to a new
// sequence as a prefix-cache hit (num_computed_tokens > 0).
//
// Thread safety: not thread safe; one Execute() at a time (the executor contract).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/models/model.h"
#include "worker/step_executor.h"

namespace tessera {

struct StepRunnerOptions {
  int num_blocks = 256;      // KV cache capacity in blocks
  int block_size = 16;       // token slots per block
  bool keep_logits = false;  // keep the raw logits of every sample of the last step (tests)
};

// Bytes one KV block takes for the model's layer specs (every layer, f32 cache).
int64_t KvBytesPerBlock(const std::vector<LayerKvSpec>& specs, int block_size);

class StepRunner : public StepExecutor {
 public:
  // Takes the loaded model (and the checkpoint it may view) and allocates the KV cache.
  static absl::StatusOr<std::unique_ptr<StepRunner>> Create(LoadedModel loaded,
                                                            const StepRunnerOptions& options);
  static absl::StatusOr<std::unique_ptr<StepRunner>> Create(std::unique_ptr<Model> model,
                                                            const StepRunnerOptions& options);

  KvCapacity capacity() const override;
  absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) override;

  Model& model() { return *loaded_.model; }
  int num_sequences() const { return static_cast<int>(seqs_.size()); }
  bool HasSequence(uint64_t seq_id) const { return seqs_.contains(seq_id); }
  // Raw logits ([vocab_size] f32) of the sequence's sample in the last Execute(), when
  // options.keep_logits; nullptr when it did not sample.
  const std::vector<float>* LastLogits(uint64_t seq_id) const;

 private:
  struct Sequence {
    std::vector<int32_t> tokens;  // the whole known context
    int64_t num_outputs = 0;      // trailing tokens that are outputs
    int64_t num_computed = 0;     // tokens whose KV is in the cache
    std::vector<int32_t> blocks;
    SamplingParams sampling;
    int num_top_logprobs = 0;
    int min_tokens = 0;                       // ban min_tokens_banned_ids before this
    std::vector<int32_t> min_tokens_banned_ids;
  };

  StepRunner(LoadedModel loaded, KvCache cache, const StepRunnerOptions& options);
  absl::Status Validate(const v1::StepPlan& plan) const;

  LoadedModel loaded_;
  KvCache cache_;
  StepRunnerOptions options_;
  absl::node_hash_map<uint64_t, Sequence> seqs_;  // node map: Execute() keeps pointers
  absl::flat_hash_map<uint64_t, std::vector<float>> last_logits_;
};

}  // namespace tessera
