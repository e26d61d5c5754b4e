// Scheduler: vLLM-v1-style continuous batching over one model instance (docs/engine.md).
//
// Every step it schedules, within a token budget (max_num_batched_tokens):
//   1. running requests in arrival order: a decoding request computes its one new token, a
//      request whose prompt is partially prefilled computes its next chunk; when blocks run out
//      the most recently arrived running request is preempted (recompute: its blocks are freed
//      and it goes back to the front of the waiting queue) until the current one fits;
//   2. then, if nothing was preempted, waiting requests in FCFS order while the budget and the
//      max_num_seqs cap last, each starting at its prefix-cache hit (full blocks, never the last
//      context token) with the first chunk of what is left.
// It emits the StepPlan delta of step.proto: new_seqs (whole context, block table, computed
// prefix, the chunk), cached_seqs (the token accepted since the last plan, new blocks, the
// chunk), finished_seq_ids (finished, aborted and preempted sequences since the last plan). A
// request gets a fresh seq_id each time it is (re)scheduled as a new sequence.
// After a successful step, ApplyResult() advances each scheduled request, registers its newly
// completed full blocks in the prefix cache (only computed KV is ever shared) and returns the
// sampled tokens; the caller appends accepted tokens with Accept() and ends requests with
// Finish(). Output processing, callbacks and threading belong to LlmEngine.
//
// Thread safety: not thread safe; the engine thread owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "coordinator/engine/block_manager.h"
#include "coordinator/engine/engine.h"
#include "coordinator/engine/output_processor.h"
#include "tessera/v1/step.pb.h"

namespace tessera {

using EngineClock = std::chrono::steady_clock;

// One request as the engine tracks it.
struct EngineRequest {
  std::string id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;  // accepted output tokens
  RequestSampling sampling;
  uint64_t seed = 0;            // sampling.seed or one drawn by the engine
  std::vector<int32_t> min_tokens_banned_ids;  // EOS (unless ignore_eos) + stop token ids
  OutputCallback callback;
  std::unique_ptr<OutputProcessor> processor;
  Usage usage;
  bool scheduled_once = false;

  // Scheduling state (the scheduler's).
  uint64_t seq_id = 0;          // 0: not known to the workers
  int64_t num_computed = 0;     // context tokens whose KV is computed
  std::vector<int32_t> blocks;  // block table
  int num_registered_blocks = 0;  // leading full blocks registered in (or hit from) the cache
  uint64_t last_block_hash = KvBlockManager::kRootHash;
  std::vector<int32_t> pending_append;  // accepted since the last plan
  int num_scheduled = 0;        // tokens scheduled in the current step

  // Timing (metrics).
  EngineClock::time_point arrival_time;
  EngineClock::time_point last_token_time;

  int64_t context_len() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  int32_t context_token(int64_t i) const {
    return i < static_cast<int64_t>(prompt.size()) ? prompt[i] : output[i - prompt.size()];
  }
};

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  int num_blocks = 0;
  int block_size = 0;
  bool enable_prefix_caching = true;
};

// What one Schedule() call did (metrics).
struct ScheduleStats {
  int num_preempted = 0;
  int64_t prefix_queries = 0;  // context tokens looked up in the prefix cache
  int64_t prefix_hits = 0;     // of which were hits
  int num_scheduled_tokens = 0;
};

struct SampledOutput {
  EngineRequest* request;
  const v1::SampledToken* token;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  const SchedulerConfig& config() const { return config_; }
  const KvBlockManager& block_manager() const { return *blocks_; }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  // Something to schedule, or released sequences to tell the workers about.
  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }
  bool HasPendingReleases() const { return !pending_finished_.empty(); }

  // Queues a request at the back of the waiting queue (or the front: requeued after a failure).
  void Add(std::unique_ptr<EngineRequest> request, bool front = false);
  EngineRequest* Find(absl::string_view request_id) const;

  // The next step's plan. Empty (no sequences) when nothing can be scheduled.
  v1::StepPlan Schedule(ScheduleStats* stats);
  // Applies the executor's result for the last plan: advances every scheduled request and returns
  // the samples in result order. INTERNAL when the result does not match the plan (a sequence
  // that had to sample did not, or an unknown one did).
  absl::StatusOr<std::vector<SampledOutput>> ApplyResult(const v1::StepResult& result);
  // Appends an accepted output token (sent to the workers with the next plan).
  void Accept(EngineRequest* request, int32_t token);
  // Ends a request (finished or aborted): frees its blocks, tells the workers with the next plan.
  std::unique_ptr<EngineRequest> Finish(EngineRequest* request);

  // The instance failed: every worker-side state is gone. Forgets all sequences and the prefix
  // cache, and returns the running requests (taken out of the scheduler) in arrival order; the
  // waiting ones stay queued.
  std::vector<std::unique_ptr<EngineRequest>> DropWorkerState();
  // New capacity (an instance came back); only with nothing running.
  void Reconfigure(int num_blocks, int block_size);

 private:
  void Preempt(EngineRequest* request);
  int BlocksFor(int64_t num_tokens) const {
    return static_cast<int>((num_tokens + config_.block_size - 1) / config_.block_size);
  }

  SchedulerConfig config_;
  std::unique_ptr<KvBlockManager> blocks_;
  absl::flat_hash_map<std::string, std::unique_ptr<EngineRequest>> requests_;
  absl::flat_hash_map<uint64_t, EngineRequest*> by_seq_;
  std::deque<EngineRequest*> waiting_;
  std::vector<EngineRequest*> running_;  // arrival order of admission
  std::vector<EngineRequest*> scheduled_;  // of the last plan
  std::vector<uint64_t> pending_finished_;
  uint64_t next_seq_id_ = 1;
  uint64_t next_step_id_ = 1;
};

}  // namespace tessera
