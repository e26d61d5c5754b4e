// DataParallelEngine: one Engine over several engines that serve the same model (data-parallel
// replicas, one per model instance; docs/cluster.md). Front ends see one model.
//
// Contract: Submit() goes to the ready replica with the fewest live requests (ties: lowest
// index); a replica that refuses because it just stopped being ready is skipped. With no ready
// replica, Submit() fails with UNAVAILABLE naming the model. Abort() reaches the replica that
// holds the request (requests without an id get "dp-N"). model_info() is the first replica's, ready when any replica is.
//
// Thread safety: all methods may be called from any thread; the replicas must outlive this.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "coordinator/engine/engine.h"

namespace tessera {

class DataParallelEngine : public Engine {
 public:
  explicit DataParallelEngine(std::vector<Engine*> replicas);

  absl::Status Submit(GenerateRequest request, OutputCallback on_output) override;
  void Abort(absl::string_view request_id) override;
  ModelInfo model_info() const override;

  int num_replicas() const { return static_cast<int>(replicas_.size()); }
  int num_ready_replicas() const;
  // Live requests per replica (tests, status).
  std::vector<int> live_requests() const;

 private:
  std::vector<Engine*> replicas_;
  struct Shared {
    std::mutex mu;
    std::vector<int> live;
    absl::flat_hash_map<std::string, int> owner;  // request id -> replica
    std::atomic<uint64_t> next_id{1};              // ids of requests submitted without one
  };
  std::shared_ptr<Shared> shared_;
};

}  // namespace tessera
