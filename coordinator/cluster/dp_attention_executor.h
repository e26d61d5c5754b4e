// DataParallelAttentionGroup: the engines of the data-parallel-attention ranks of one model
// instance (docs/sharding.md, `tessera serve --dp N`) share its workers.
//
// Each DP rank d has its own LlmEngine (own requests, scheduler and KV cache: the KV block ids of
// its plans index the caches of DP rank d's workers only) driving executor(d). The MoE layers of
// the instance exchange tokens between all DP ranks, so every worker must run every step: when
// an engine submits a plan, the group sends each DP rank's workers that rank's plan, or an empty
// plan (the worker then joins the MoE dispatch / combine with zero tokens, Model::ForwardIdle)
// for engines with nothing to run, and returns to each engine the result of its DP rank's driver
// (world rank d * tp: tp rank 0 of stage 0).
//
// Batching: the first engine to submit leads the step. It waits up to `gather_wait` for the
// engines that took part in the previous step to submit too (they usually do within
// microseconds), so that busy DP ranks share steps instead of alternating; engines that submit
// while a step is running go into the next one.
//
// The destructor logs how many steps ran and how many plans each DP rank contributed.
//
// Thread safety: executor(d).Execute is called by engine d's thread; the group is thread safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/cluster/cluster_service.h"
#include "worker/step_executor.h"

namespace tessera {

class DataParallelAttentionGroup {
 public:
  // `instance` (borrowed) has pp * tp * dp ranks laid out as docs/sharding.md says (world rank
  // = pp_rank * tp * dp + dp_rank * tp + tp_rank); `tp` is the tensor-parallel size inside a DP
  // rank.
  DataParallelAttentionGroup(ClusterExecutor* instance, int dp, int tp,
                             std::chrono::microseconds gather_wait = std::chrono::microseconds(
                                 2000));
  ~DataParallelAttentionGroup();

  int dp() const { return dp_; }
  // The executor of DP rank d (owned by the group).
  StepExecutor* executor(int d) const;
  ClusterExecutor* instance() const { return instance_; }
  // Steps sent to the workers so far, and how many DP-rank plans they carried (tests).
  uint64_t steps() const;
  uint64_t plans() const;

 private:
  class RankExecutor;
  absl::StatusOr<v1::StepResult> Execute(int d, const v1::StepPlan& plan);
  // The DP rank of world rank r (its plan), and whether r is a DP rank's driver.
  int DpRankOf(int rank) const;

  ClusterExecutor* const instance_;
  const int dp_, tp_;
  const std::chrono::microseconds gather_wait_;
  std::vector<std::unique_ptr<RankExecutor>> executors_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool dispatching_ = false;
  uint64_t next_step_id_ = 1;
  uint64_t steps_ = 0, plans_ = 0;
  std::vector<const v1::StepPlan*> submitted_;  // per DP rank, waiting for a step
  std::vector<bool> done_;
  std::vector<absl::StatusOr<v1::StepResult>> results_;
  std::vector<bool> in_last_step_;  // engines whose plan ran in the previous step
  std::vector<uint64_t> plans_per_rank_;
};

}  // namespace tessera
