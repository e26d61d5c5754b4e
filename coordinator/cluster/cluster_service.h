// ClusterService: the coordinator side of the worker protocol (proto/tessera/v1/cluster.proto,
// service Cluster; docs/cluster.md): registration, membership, assignment of workers to the ranks
// of model instances, heartbeats, and the per-instance ClusterExecutor that runs engine steps on
// the workers.
//
// Contract:
// - Registration: a wrong join token ends the stream with PERMISSION_DENIED, a protocol version
//   other than kProtocolVersion with FAILED_PRECONDITION, a worker id that is connected already
//   with ALREADY_EXISTS; every message says what to do.
// - Membership: a registered worker fills the first vacant rank of the instances added with
//   AddInstance() (in order) and is sent an Assignment; extra workers wait as spares. A worker is
//   marked down when its stream breaks (at once) or when no heartbeat arrived for
//   heartbeat_timeout; its rank becomes vacant, its instance stops being ready, a step in flight
//   fails with UNAVAILABLE naming the worker, and the other ranks of the instance are sent a new
//   Assignment (next generation) so that every rank starts from a clean state. When a worker
//   (re)joins and every rank is Ready again, the instance is ready again.
// - Listeners registered with AddListener() hear every readiness change of an instance. They run
//   on the thread that made the change, without internal locks held; keep them short.
//
// Thread safety: all public methods are thread safe. Connect() runs on gRPC sync-server threads
// (one per worker stream); a monitor thread sends heartbeats and enforces the timeout.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/engine/metrics.h"
#include "tessera/v1/cluster.grpc.pb.h"
#include "worker/step_executor.h"

namespace tessera {

struct ClusterOptions {
  std::string join_token;  // empty: any token is accepted
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{3000};
  // A step whose results have not all arrived by then fails with UNAVAILABLE naming the ranks.
  std::chrono::milliseconds step_timeout{120000};
  // Optional (must outlive the service): per-worker metrics, labelled by worker id —
  // tessera:worker_step_duration_seconds{worker,instance,rank} (histogram: step plan sent to that
  // worker's result or acknowledgement received), tessera:worker_heartbeat_age_seconds{worker}
  // (gauge: time since the last message from a connected worker, refreshed by the monitor
  // thread) and tessera:worker_up{worker} (gauge: 1 while connected, 0 once down).
  MetricsRegistry* metrics = nullptr;
};

// One model instance: `world_size` ranks that run every step together (SPMD).
struct InstanceSpec {
  std::string instance_id;
  std::string model_dir;
  int world_size = 1;
  v1::MeshShape mesh;          // tp * ep-group * dp * pp layout of the ranks
  int64_t kv_cache_bytes = 0;  // per rank; 0: kv_cache_fraction
  float kv_cache_fraction = 0.5f;
  int block_size = 16;
  int max_tokens_per_step = 2048;
};

struct WorkerSnapshot {
  std::string worker_id;
  std::string state;          // "idle", "loading", "ready", "down"
  std::string instance_id;    // empty when a spare
  int rank = -1;
  v1::Registration registration;
};

struct InstanceSnapshot {
  std::string instance_id;
  uint64_t generation = 0;
  bool ready = false;
  KvCapacity capacity;
  std::vector<std::string> rank_workers;  // worker id per rank ("" = vacant)
};

class ClusterExecutor;

class ClusterService final : public v1::Cluster::Service {
 public:
  using Listener = std::function<void(const std::string& instance_id, bool ready)>;

  explicit ClusterService(ClusterOptions options);
  ~ClusterService() override;
  ClusterService(const ClusterService&) = delete;
  ClusterService& operator=(const ClusterService&) = delete;

  // Adds a model instance whose ranks workers will fill. The returned executor (owned by the
  // service, valid for its lifetime) runs steps on it.
  ClusterExecutor* AddInstance(InstanceSpec spec);
  void AddListener(Listener listener);

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;

  std::vector<WorkerSnapshot> Workers() const;
  std::vector<InstanceSnapshot> Instances() const;
  // Blocks until every instance is ready or `timeout` passes; returns whether they are.
  bool WaitAllReady(std::chrono::milliseconds timeout) const;
  // Sends Shutdown to every connected worker (they exit 0) and fails later registrations.
  void Shutdown(const std::string& reason);

 private:
  friend class ClusterExecutor;
  struct Worker;
  struct Instance;
  struct PendingStep;

  // Sends `message` on the worker's stream (serialised per worker). False when the stream is gone.
  bool Send(const std::shared_ptr<Worker>& worker, const v1::CoordinatorMessage& message);
  // Marks the worker down (idempotent). Called with mu_ held; appends listener notifications and
  // assignments to send to `after` (run them after unlocking).
  void MarkDownLocked(const std::shared_ptr<Worker>& worker, const std::string& reason,
                      std::vector<std::function<void()>>* after);
  // Fills vacant ranks with idle workers. mu_ held; sends are deferred into `after`.
  void AssignLocked(std::vector<std::function<void()>>* after);
  void SendAssignmentLater(const std::shared_ptr<Worker>& worker, Instance& instance,
                           std::vector<std::function<void()>>* after);
  void NotifyLater(const std::string& instance_id, bool ready,
                   std::vector<std::function<void()>>* after);
  void HandleMessage(const std::shared_ptr<Worker>& worker, const v1::WorkerMessage& message);
  void MonitorLoop();

  // Executor entry points: one plan for every rank (rank 0's result), or a plan per rank (every
  // rank's result; ranks that are not drivers return only the step id). The plans of one step
  // share its step_id.
  absl::StatusOr<v1::StepResult> ExecuteOn(Instance* instance, const v1::StepPlan& plan);
  absl::StatusOr<std::vector<v1::StepResult>> ExecuteOnRanks(
      Instance* instance, const std::function<const v1::StepPlan&(int rank)>& plan_of);

  const ClusterOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<std::shared_ptr<Worker>> workers_;  // every live (not down) worker
  std::vector<std::unique_ptr<Instance>> instances_;
  std::vector<Listener> listeners_;
  int next_worker_number_ = 0;
  HistogramFamily* step_duration_ = nullptr;  // null without options_.metrics
  GaugeFamily* heartbeat_age_ = nullptr;
  GaugeFamily* worker_up_ = nullptr;
  bool shutdown_ = false;
  bool stop_monitor_ = false;
  std::thread monitor_;
};

// StepExecutor over one model instance's workers: sends the plan to every rank, waits for all of
// them, returns the driver's (rank 0) result. UNAVAILABLE naming the worker when a rank is down,
// goes down during the step, or does not answer within the step timeout; a worker's own error
// comes back with its code, naming the worker. capacity() is the minimum over the ranks of the
// current generation (zero while the instance is not ready).
class ClusterExecutor : public StepExecutor {
 public:
  KvCapacity capacity() const override;
  absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) override;
  // One step with plan_of(r) sent to rank r (data-parallel attention: each DP rank its own
  // plan); returns every rank's result, with the same errors as Execute.
  absl::StatusOr<std::vector<v1::StepResult>> ExecuteOnRanks(
      const std::function<const v1::StepPlan&(int rank)>& plan_of);
  int world_size() const;
  bool ready() const;
  const std::string& instance_id() const;

 private:
  friend class ClusterService;
  ClusterExecutor(ClusterService* service, ClusterService::Instance* instance)
      : service_(service), instance_(instance) {}
  ClusterService* service_;
  ClusterService::Instance* instance_;
};

}  // namespace tessera
