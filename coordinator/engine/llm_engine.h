// LlmEngine: the Engine (coordinator/engine/engine.h) that drives any StepExecutor — the in-process
// StepRunner or a cluster of workers — with continuous batching (docs/engine.md).
//
// One engine thread owns the Scheduler (continuous batching, chunked prefill, preemption by
// recompute), the KvBlockManager (prefix caching) and every request's OutputProcessor
// (detokenization, stop conditions). Each iteration it takes the submitted and aborted requests,
// builds one StepPlan, runs it with StepExecutor::Execute(), and delivers one output delta per
// request that got a token. Aborted and finished requests leave the plan with the next step
// (finished_seq_ids); when the engine goes idle it still sends a plan with only those releases.
//
// Executor failure: when Execute() fails (e.g. UNAVAILABLE, a worker died), the engine assumes
// the instance lost every sequence and its cache. Requests of the failed step's instance that have
// streamed nothing are requeued (they rejoin as new sequences), the others end with the
// executor's status; the engine then reports not ready (model_info().ready == false, Submit()
// answers FAILED_PRECONDITION) until SetReady(true) — the cluster's hook once the instance is
// back with empty state; capacity() is read again then.
//
// Thread safety: Submit(), Abort(), SetReady(), model_info() and metrics() may be called from any
// thread. Callbacks run on the engine thread (see Engine).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "coordinator/engine/engine.h"
#include "coordinator/engine/metrics.h"
#include "coordinator/engine/scheduler.h"
#include "coordinator/text/tokenizer.h"
#include "worker/step_executor.h"

namespace tessera {

struct LlmEngineOptions {
  std::string model_name = "model";       // label model_name of every metric
  int32_t vocab_size = 0;                 // required: prompt ids and stop ids are checked
  int64_t max_model_len = 0;              // required: context length (prompt + outputs)
  std::vector<int32_t> eos_token_ids;     // end generation unless ignore_eos
  const Tokenizer* tokenizer = nullptr;   // may be null: outputs carry no text, stop strings
                                          // are rejected; must outlive the engine
  int max_num_batched_tokens = 2048;      // token budget of one step
  int max_num_seqs = 256;                 // running sequences at most
  bool enable_prefix_caching = true;
  bool start_ready = true;                // false: wait for SetReady(true) (cluster start-up)
  uint64_t seed = 0;                      // draws seeds of unseeded requests; 0: random
  MetricsRegistry* metrics = nullptr;     // shared registry; null: the engine owns one
  int engine_index = -1;                  // label `engine` of its metrics (data-parallel
                                          // replicas); -1: the next free index in `metrics`
};

class LlmEngine : public Engine {
 public:
  // `executor` must outlive the engine. With start_ready, its capacity() is read now.
  static absl::StatusOr<std::unique_ptr<LlmEngine>> Create(StepExecutor* executor,
                                                           LlmEngineOptions options);
  // Stops the engine thread; live requests end with finish reason abort and status CANCELLED.
  ~LlmEngine() override;

  absl::Status Submit(GenerateRequest request, OutputCallback on_output) override;
  void Abort(absl::string_view request_id) override;
  ModelInfo model_info() const override;

  // Cluster hook: the instance is (again) able to run steps with EMPTY per-sequence state (true:
  // capacity() is read again; requests that were running resume by recompute with their outputs
  // kept), or is gone (false: nothing is scheduled, Submit() is refused, requests wait).
  void SetReady(bool ready);

  MetricsRegistry& metrics() { return *metrics_; }

  // Point-in-time counters for tests and status pages.
  struct Stats {
    int num_running = 0;
    int num_waiting = 0;
    int num_free_blocks = 0;
    int num_blocks = 0;
    int64_t num_steps = 0;
    int64_t num_preemptions = 0;
    int64_t num_live_requests = 0;  // submitted and not yet finished
  };
  Stats stats() const;
  // Blocks until no request is live (true) or `timeout_seconds` passed (false).
  bool WaitIdle(double timeout_seconds) const;

 private:
  LlmEngine(StepExecutor* executor, LlmEngineOptions options);
  void Loop();
  void RunStep(std::vector<std::pair<OutputCallback, GenerateOutput>>* deliveries);
  void HandleFailure(const absl::Status& status,
                     std::vector<std::pair<OutputCallback, GenerateOutput>>* deliveries);
  // Ends a request: final output, metrics, scheduler release.
  void FinishRequest(EngineRequest* r, GenerateOutput out,
                     std::vector<std::pair<OutputCallback, GenerateOutput>>* deliveries);
  void UpdateGauges();
  int64_t EffectiveMaxModelLen() const;  // under mu_

  StepExecutor* const executor_;
  const LlmEngineOptions options_;
  std::unique_ptr<MetricsRegistry> owned_metrics_;
  MetricsRegistry* metrics_;

  // Engine-thread state.
  std::unique_ptr<Scheduler> scheduler_;

  // Shared state.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;       // wakes the engine thread
  mutable std::condition_variable idle_cv_;  // WaitIdle
  bool stop_ = false;
  bool ready_ = false;
  bool ready_changed_ = false;
  bool has_work_ = false;  // the scheduler had work after the last iteration
  KvCapacity capacity_;
  std::deque<std::unique_ptr<EngineRequest>> incoming_;
  std::vector<std::string> aborts_;
  absl::flat_hash_set<std::string> live_ids_;
  uint64_t next_request_number_ = 1;
  std::mt19937_64 seed_rng_;
  Stats stats_;

  // Metrics (children with this engine's model_name and engine labels).
  std::string engine_label_;
  Gauge* num_running_;
  Gauge* num_waiting_;
  Gauge* kv_usage_;
  Counter* prefix_queries_;
  Counter* prefix_hits_;
  Counter* prompt_tokens_;
  Counter* generation_tokens_;
  Counter* preemptions_;
  CounterFamily* success_;
  Histogram* ttft_;
  Histogram* tpot_;
  Histogram* e2e_;
  Histogram* request_prompt_tokens_;
  Histogram* request_generation_tokens_;

  std::thread thread_;
};

}  // namespace tessera
