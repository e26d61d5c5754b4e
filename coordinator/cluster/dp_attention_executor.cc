#include "coordinator/cluster/dp_attention_executor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera {

class DataParallelAttentionGroup::RankExecutor : public StepExecutor {
 public:
  RankExecutor(DataParallelAttentionGroup* group, int d) : group_(group), d_(d) {}
  KvCapacity capacity() const override { return group_->instance_->capacity(); }
  absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) override {
    return group_->Execute(d_, plan);
  }

 private:
  DataParallelAttentionGroup* group_;
  int d_;
};

DataParallelAttentionGroup::DataParallelAttentionGroup(ClusterExecutor* instance, int dp, int tp,
                                                       std::chrono::microseconds gather_wait)
    : instance_(instance),
      dp_(dp),
      tp_(tp),
      gather_wait_(gather_wait),
      submitted_(dp, nullptr),
      done_(dp, false),
      results_(dp, absl::UnknownError("no result")),
      in_last_step_(dp, false),
      plans_per_rank_(dp, 0) {
  for (int d = 0; d < dp; ++d) executors_.push_back(std::make_unique<RankExecutor>(this, d));
}

DataParallelAttentionGroup::~DataParallelAttentionGroup() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string per_rank;
  for (int d = 0; d < dp_; ++d) absl::StrAppend(&per_rank, d ? ", " : "", plans_per_rank_[d]);
  LOG(INFO) << "data-parallel attention group of instance '" << instance_->instance_id()
            << "': " << steps_ << " steps carried " << plans_ << " plans (per DP rank: "
            << per_rank << ")";
}

StepExecutor* DataParallelAttentionGroup::executor(int d) const { return executors_[d].get(); }

uint64_t DataParallelAttentionGroup::steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return steps_;
}

uint64_t DataParallelAttentionGroup::plans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_;
}

int DataParallelAttentionGroup::DpRankOf(int rank) const {
  // rank = pp_rank * S + dp_rank * tp + tp_rank with S = max(tp * dp, ep) = tp * dp here.
  return (rank % (tp_ * dp_)) / tp_;
}

absl::StatusOr<v1::StepResult> DataParallelAttentionGroup::Execute(int d,
                                                                  const v1::StepPlan& plan) {
  std::unique_lock<std::mutex> lock(mu_);
  submitted_[d] = &plan;
  done_[d] = false;
  cv_.notify_all();  // a leader gathering this step's plans may be waiting for this one
  while (!done_[d]) {
    if (dispatching_) {
      cv_.wait(lock);
      continue;
    }
    dispatching_ = true;
    // Give the engines of the previous step a moment to submit theirs.
    const auto deadline = std::chrono::steady_clock::now() + gather_wait_;
    auto all_in = [&] {
      for (int e = 0; e < dp_; ++e) {
        if (in_last_step_[e] && submitted_[e] == nullptr) return false;
      }
      return true;
    };
    while (!all_in() && cv_.wait_until(lock, deadline) != std::cv_status::timeout) {
    }
    std::vector<const v1::StepPlan*> taken = submitted_;
    std::fill(submitted_.begin(), submitted_.end(), nullptr);
    const uint64_t step_id = next_step_id_++;
    lock.unlock();

    // Every DP rank's plan under the step's id; an empty plan for idle DP ranks.
    std::vector<v1::StepPlan> plans(dp_);
    for (int e = 0; e < dp_; ++e) {
      if (taken[e] != nullptr) plans[e] = *taken[e];
      plans[e].set_step_id(step_id);
    }
    absl::StatusOr<std::vector<v1::StepResult>> all = instance_->ExecuteOnRanks(
        [&](int rank) -> const v1::StepPlan& { return plans[DpRankOf(rank)]; });

    lock.lock();
    dispatching_ = false;
    ++steps_;
    for (int e = 0; e < dp_; ++e) {
      in_last_step_[e] = taken[e] != nullptr;
      if (taken[e] == nullptr) continue;
      ++plans_;
      ++plans_per_rank_[e];
      if (!all.ok()) {
        results_[e] = all.status();
      } else {
        v1::StepResult r = std::move((*all)[e * tp_]);  // DP rank e's driver
        r.set_step_id(taken[e]->step_id());
        results_[e] = std::move(r);
      }
      done_[e] = true;
    }
    cv_.notify_all();
  }
  absl::StatusOr<v1::StepResult> out = std::move(results_[d]);
  results_[d] = absl::UnknownError("no result");
  return out;
}

}  // namespace tessera
