// StepExecutor: how the engine's scheduler runs one step on a model instance (DESIGN.md section 3).
//
// Implementations: the worker's StepRunner (worker/step_runner.h: runs the plan in this process on
// a loaded model; what `tessera generate` and tests use) and the cluster executor
// (coordinator/cluster: sends the plan to every worker of the instance over their streams and
// returns the driver's result). The interface lives in worker/ so that both sides see it without a
// dependency cycle (coordinator -> worker). The plan/result messages are the wire types of
// proto/tessera/v1/step.proto, so nothing is translated between the engine and the network.
//
// Thread safety: Execute() is called from the engine thread only, one step at a time.
#pragma once

#include "absl/status/statusor.h"
#include "tessera/v1/step.pb.h"

namespace tessera {

struct KvCapacity {
  int num_blocks = 0;  // KV blocks every worker of the instance can hold (the minimum over ranks)
  int block_size = 0;  // token slots per block
};

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  virtual KvCapacity capacity() const = 0;
  // Runs the plan. A non-OK status means the instance failed (e.g. UNAVAILABLE: a worker died);
  // the engine then fails or requeues the plan's requests.
  virtual absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) = 0;
};

}  // namespace tessera
