#include "coordinator/cluster/data_parallel_engine.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {

DataParallelEngine::DataParallelEngine(std::vector<Engine*> replicas)
    : replicas_(std::move(replicas)), shared_(std::make_shared<Shared>()) {
  shared_->live.assign(replicas_.size(), 0);
}

absl::Status DataParallelEngine::Submit(GenerateRequest request, OutputCallback on_output) {
  if (request.request_id.empty()) {
    request.request_id = absl::StrCat("dp-", shared_->next_id.fetch_add(1));
  }
  std::vector<int> order(replicas_.size());
  std::iota(order.begin(), order.end(), 0);
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (!request.request_id.empty() && shared_->owner.contains(request.request_id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id: '", request.request_id, "' is already live"));
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return shared_->live[a] < shared_->live[b]; });
  }
  absl::Status last = absl::UnavailableError(
      absl::StrCat("model '", model_info().name, "': no instance is ready (a worker is down or "
                   "still loading); retry shortly"));
  for (int index : order) {
    Engine* engine = replicas_[index];
    if (!engine->model_info().ready) continue;
    const std::string id = request.request_id;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      ++shared_->live[index];
      if (!id.empty()) shared_->owner[id] = index;
    }
    std::shared_ptr<Shared> shared = shared_;
    GenerateRequest copy = request;
    absl::Status st = engine->Submit(
        std::move(copy), [shared, index, id, on_output](GenerateOutput out) {
          if (out.finished) {
            std::lock_guard<std::mutex> lock(shared->mu);
            --shared->live[index];
            shared->owner.erase(id);
          }
          on_output(std::move(out));
        });
    if (st.ok()) return st;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      --shared_->live[index];
      shared_->owner.erase(id);
    }
    // Only a replica that stopped being ready is skipped; other errors are the request's fault.
    if (st.code() != absl::StatusCode::kFailedPrecondition &&
        st.code() != absl::StatusCode::kUnavailable) {
      return st;
    }
    last = st;
  }
  if (last.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::UnavailableError(last.message());
  }
  return last;
}

void DataParallelEngine::Abort(absl::string_view request_id) {
  int index = -1;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto it = shared_->owner.find(request_id);
    if (it != shared_->owner.end()) index = it->second;
  }
  if (index >= 0) replicas_[index]->Abort(request_id);
}

ModelInfo DataParallelEngine::model_info() const {
  ModelInfo info = replicas_.front()->model_info();
  info.ready = num_ready_replicas() > 0;
  return info;
}

int DataParallelEngine::num_ready_replicas() const {
  int n = 0;
  for (Engine* e : replicas_) n += e->model_info().ready ? 1 : 0;
  return n;
}

std::vector<int> DataParallelEngine::live_requests() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->live;
}

}  // namespace tessera
