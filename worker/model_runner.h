// ModelRunner: runs one Model on one CPU worker over a set of sequences with a paged KV cache.
//
// It owns the Model, its KvCache and a BlockAllocator. Sequences are added with their prompt token
// ids and sampling parameters; each Step() schedules a mixed batch — every sequence that is
// decoding contributes its one new token, then prompts are prefilled in chunks while the step's
// token budget (max_tokens_per_step) lasts — builds the AttentionBatch, runs Model::Forward and
// samples one token (kernels' Sample, per-sequence SamplingParams / seed, step = output index)
// for every sequence whose whole context is now in the cache. Blocks are allocated as sequences
// grow and freed by RemoveSequence(). There is no preemption: a step that needs more blocks than
// are free fails with RESOURCE_EXHAUSTED and changes nothing.
//
// Thread safety: not thread safe; drive a runner from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/models/model.h"

namespace tessera {

struct ModelRunnerOptions {
  int block_size = 16;
  int num_blocks = 256;              // KV cache capacity = num_blocks * block_size token slots
  int max_tokens_per_step = 512;     // bound on prefill + decode tokens per step (>= 1)
  uint64_t seed = 0;                 // drives fallback randomness of unseeded sequences
  bool return_logits = false;        // StepOutput::logits holds the raw logits of each sample
};

struct StepOutput {
  int64_t seq_id = 0;
  int32_t token = -1;
  float logprob = 0.0f;
  std::vector<float> logits;  // [vocab_size] raw logits (before sampling) when return_logits
};

class ModelRunner {
 public:
  // `model` must outlive nothing else; when it views checkpoint memory, keep the Checkpoint
  // alive for the runner's lifetime (see LoadedModel).
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(std::unique_ptr<Model> model,
                                                             const ModelRunnerOptions& options);

  Model& model() { return *model_; }
  const KvCache& kv_cache() const { return cache_; }
  int num_free_blocks() const { return allocator_.num_free(); }

  // Adds a sequence. INVALID_ARGUMENT for a duplicate id, an empty prompt, a token id outside
  // [0, vocab_size) or invalid sampling parameters (naming the field).
  absl::Status AddSequence(int64_t seq_id, std::vector<int32_t> prompt,
                           const SamplingParams& params = {});
  // Frees the sequence's blocks. NOT_FOUND for an unknown id.
  absl::Status RemoveSequence(int64_t seq_id);
  bool HasSequence(int64_t seq_id) const { return seqs_.contains(seq_id); }
  // Tokens generated so far for the sequence (empty when unknown).
  std::vector<int32_t> OutputTokens(int64_t seq_id) const;
  // The sampled token of every sequence whose prompt (and previous tokens) finished this step,
  // in order of the batch. Empty when there is nothing to run.
  absl::StatusOr<std::vector<StepOutput>> Step();

  // Token counts of the last Step(): prefill (prompt) tokens and decode tokens it processed.
  int last_prefill_tokens() const { return last_prefill_tokens_; }
  int last_decode_tokens() const { return last_decode_tokens_; }

 private:
  struct Sequence {
    int64_t id = 0;
    std::vector<int32_t> prompt;
    std::vector<int32_t> output;
    SamplingParams params;
    int64_t num_computed = 0;  // tokens whose KV is in the cache
    std::vector<int32_t> blocks;
    int64_t total() const { return static_cast<int64_t>(prompt.size() + output.size()); }
    int32_t token_at(int64_t i) const {
      return i < static_cast<int64_t>(prompt.size()) ? prompt[i] : output[i - prompt.size()];
    }
  };

  ModelRunner(std::unique_ptr<Model> model, KvCache cache, const ModelRunnerOptions& options);

  std::unique_ptr<Model> model_;
  KvCache cache_;
  BlockAllocator allocator_;
  ModelRunnerOptions options_;
  std::vector<int64_t> order_;  // insertion order of live sequences
  absl::flat_hash_map<int64_t, Sequence> seqs_;
  std::mt19937_64 rng_;
  int last_prefill_tokens_ = 0;
  int last_decode_tokens_ = 0;
};

}  // namespace tessera
