#include "coordinator/cluster/cluster_service.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "worker/version.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct ClusterService::Worker {
  std::string id;
  v1::Registration registration;
  grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream = nullptr;

  // Guards `context` (cleared when the handler returns) for TryCancel from other threads.
  std::mutex ctx_mu;
  grpc::ServerContext* context = nullptr;
  // Serialises writes; `closed` (under write_mu) means the stream may no longer be used.
  std::mutex write_mu;
  bool closed = false;

  // Under the service's mu_.
  enum class State { kIdle, kLoading, kReady, kDown } state = State::kIdle;
  Instance* instance = nullptr;
  int rank = -1;
  uint64_t generation = 0;  // of the last Assignment sent
  KvCapacity capacity;
  Clock::time_point last_heard = Clock::now();
  Clock::time_point last_heartbeat_sent{};
  uint64_t heartbeat_seq = 0;
  uint64_t peer_seq = 0;
  int64_t peer_send_us = 0;

  std::string Describe() const {
    if (instance == nullptr) return absl::StrCat("worker '", id, "'");
    return absl::StrCat("worker '", id, "' (rank ", rank, " of instance '", InstanceId(), "')");
  }
  std::string InstanceId() const;
  void Cancel() {
    std::lock_guard<std::mutex> lock(ctx_mu);
    if (context != nullptr) context->TryCancel();
  }
};

struct ClusterService::PendingStep {
  uint64_t step_id = 0;
  Clock::time_point sent;  // when the plan went out
  uint64_t generation = 0;
  std::vector<std::optional<v1::StepResult>> results;
  int received = 0;
  absl::Status error;
};

struct ClusterService::Instance {
  InstanceSpec spec;
  uint64_t generation = 1;
  std::vector<std::shared_ptr<Worker>> ranks;  // nullptr = vacant
  bool ready = false;
  KvCapacity capacity;
  std::unique_ptr<ClusterExecutor> executor;
  PendingStep* pending = nullptr;
};

std::string ClusterService::Worker::InstanceId() const {
  return instance == nullptr ? std::string() : instance->spec.instance_id;
}

ClusterService::ClusterService(ClusterOptions options) : options_(std::move(options)) {
  if (options_.metrics != nullptr) {
    MetricsRegistry& m = *options_.metrics;
    step_duration_ = m.AddHistogram(
        "tessera:worker_step_duration_seconds",
        "Time from sending a step plan to a worker until its result (driver rank) or "
        "acknowledgement arrived, in seconds.",
        {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
         30.0, 60.0, 120.0},
        {"worker", "instance", "rank"});
    heartbeat_age_ = m.AddGauge("tessera:worker_heartbeat_age_seconds",
                                "Seconds since the last message from a connected worker.",
                                {"worker"});
    worker_up_ = m.AddGauge("tessera:worker_up",
                            "1 while the worker is connected, 0 once it is down.", {"worker"});
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
}

ClusterService::~ClusterService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_monitor_ = true;
    shutdown_ = true;
  }
  cv_.notify_all();
  monitor_.join();
}

ClusterExecutor* ClusterService::AddInstance(InstanceSpec spec) {
  std::vector<std::function<void()>> after;
  ClusterExecutor* executor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto instance = std::make_unique<Instance>();
    instance->spec = std::move(spec);
    instance->ranks.resize(std::max(1, instance->spec.world_size));
    instance->executor.reset(new ClusterExecutor(this, instance.get()));
    executor = instance->executor.get();
    instances_.push_back(std::move(instance));
    AssignLocked(&after);
  }
  for (auto& f : after) f();
  return executor;
}

void ClusterService::AddListener(Listener listener) {
  std::lock_guard<std::mutex> lock(mu_);
  listeners_.push_back(std::move(listener));
}

bool ClusterService::Send(const std::shared_ptr<Worker>& worker,
                          const v1::CoordinatorMessage& message) {
  std::lock_guard<std::mutex> lock(worker->write_mu);
  if (worker->closed) return false;
  return worker->stream->Write(message);
}

void ClusterService::NotifyLater(const std::string& instance_id, bool ready,
                                 std::vector<std::function<void()>>* after) {
  for (const Listener& l : listeners_) {
    after->push_back([l, instance_id, ready] { l(instance_id, ready); });
  }
}

void ClusterService::SendAssignmentLater(const std::shared_ptr<Worker>& worker,
                                         Instance& instance,
                                         std::vector<std::function<void()>>* after) {
  const InstanceSpec& spec = instance.spec;
  v1::CoordinatorMessage msg;
  v1::Assignment* a = msg.mutable_assignment();
  a->set_model_dir(spec.model_dir);
  a->set_instance_id(spec.instance_id);
  a->set_generation(instance.generation);
  a->set_rank(worker->rank);
  a->set_world_size(static_cast<int>(instance.ranks.size()));
  *a->mutable_mesh() = spec.mesh;
  if (spec.kv_cache_bytes > 0) {
    a->set_kv_cache_bytes(spec.kv_cache_bytes);
  } else {
    a->set_kv_cache_fraction(spec.kv_cache_fraction);
  }
  a->set_block_size(spec.block_size);
  a->set_max_tokens_per_step(spec.max_tokens_per_step);
  a->set_rendezvous_namespace(absl::StrCat(spec.instance_id, "/", instance.generation));
  worker->state = Worker::State::kLoading;
  worker->generation = instance.generation;
  LOG(INFO) << "cluster: assigning " << worker->Describe() << ", generation "
            << instance.generation << ", model " << spec.model_dir;
  after->push_back([this, worker, msg] {
    if (!Send(worker, msg)) LOG(WARNING) << "cluster: could not send the assignment to " << worker->id;
  });
}

void ClusterService::AssignLocked(std::vector<std::function<void()>>* after) {
  if (shutdown_) return;
  for (auto& instance : instances_) {
    for (size_t r = 0; r < instance->ranks.size(); ++r) {
      if (instance->ranks[r] != nullptr) continue;
      std::shared_ptr<Worker> spare;
      for (auto& w : workers_) {
        if (w->state == Worker::State::kIdle && w->instance == nullptr) {
          spare = w;
          break;
        }
      }
      if (spare == nullptr) return;
      spare->instance = instance.get();
      spare->rank = static_cast<int>(r);
      instance->ranks[r] = spare;
      SendAssignmentLater(spare, *instance, after);
    }
  }
}

void ClusterService::MarkDownLocked(const std::shared_ptr<Worker>& worker,
                                    const std::string& reason,
                                    std::vector<std::function<void()>>* after) {
  if (worker->state == Worker::State::kDown) return;
  LOG(WARNING) << "cluster: " << worker->Describe() << " is down: " << reason;
  worker->state = Worker::State::kDown;
  if (worker_up_ != nullptr) worker_up_->Labels({worker->id})->Set(0);
  workers_.erase(std::remove(workers_.begin(), workers_.end(), worker), workers_.end());
  Instance* instance = worker->instance;
  if (instance != nullptr) {
    const std::string down = absl::StrCat(worker->Describe(), " is down: ", reason);
    instance->ranks[worker->rank] = nullptr;
    const bool was_ready = instance->ready;
    instance->ready = false;
    instance->capacity = KvCapacity{};
    ++instance->generation;
    if (instance->pending != nullptr && instance->pending->error.ok()) {
      instance->pending->error = absl::UnavailableError(down);
    }
    // Every surviving rank restarts from a clean state in the next generation.
    for (auto& other : instance->ranks) {
      if (other != nullptr) SendAssignmentLater(other, *instance, after);
    }
    if (was_ready) NotifyLater(instance->spec.instance_id, false, after);
  }
  cv_.notify_all();
  AssignLocked(after);
}

void ClusterService::HandleMessage(const std::shared_ptr<Worker>& worker,
                                   const v1::WorkerMessage& message) {
  std::vector<std::function<void()>> after;
  {
    std::lock_guard<std::mutex> lock(mu_);
    worker->last_heard = Clock::now();
    Instance* instance = worker->instance;
    switch (message.msg_case()) {
      case v1::WorkerMessage::kHeartbeat:
        worker->peer_seq = message.heartbeat().seq();
        worker->peer_send_us = message.heartbeat().send_unix_us();
        break;
      case v1::WorkerMessage::kLoadProgress: {
        const v1::LoadProgress& p = message.load_progress();
        if (!p.error().empty()) {
          LOG(ERROR) << "cluster: " << worker->Describe() << " failed to load: " << p.error();
        } else if (p.done()) {
          LOG(INFO) << "cluster: " << worker->Describe() << " loaded " << p.layers_total()
                    << " layers";
        }
        break;
      }
      case v1::WorkerMessage::kReady: {
        const v1::Ready& r = message.ready();
        if (instance == nullptr || r.instance_id() != instance->spec.instance_id ||
            r.generation() != instance->generation || worker->generation != r.generation()) {
          break;  // answers an older assignment
        }
        worker->state = Worker::State::kReady;
        worker->capacity = KvCapacity{r.num_blocks(), r.block_size()};
        LOG(INFO) << "cluster: " << worker->Describe() << " ready: " << r.num_blocks()
                  << " KV blocks of " << r.block_size() << " tokens, loaded in "
                  << r.load_seconds() << " s";
        bool all = true;
        KvCapacity cap{INT32_MAX, r.block_size()};
        for (auto& w : instance->ranks) {
          if (w == nullptr || w->state != Worker::State::kReady ||
              w->generation != instance->generation) {
            all = false;
            break;
          }
          cap.num_blocks = std::min(cap.num_blocks, w->capacity.num_blocks);
        }
        if (all && !instance->ready) {
          instance->ready = true;
          instance->capacity = cap;
          LOG(INFO) << "cluster: instance '" << instance->spec.instance_id << "' is ready (generation "
                    << instance->generation << ", " << cap.num_blocks << " KV blocks)";
          NotifyLater(instance->spec.instance_id, true, &after);
          cv_.notify_all();
        }
        break;
      }
      case v1::WorkerMessage::kStepResult: {
        PendingStep* p = instance == nullptr ? nullptr : instance->pending;
        if (p == nullptr || p->step_id != message.step_result().step_id() ||
            p->generation != worker->generation || p->results[worker->rank].has_value()) {
          break;
        }
        p->results[worker->rank] = message.step_result();
        if (step_duration_ != nullptr) {
          step_duration_
              ->Labels({worker->id, instance->spec.instance_id, std::to_string(worker->rank)})
              ->Observe(std::chrono::duration<double>(Clock::now() - p->sent).count());
        }
        ++p->received;
        cv_.notify_all();
        break;
      }
      case v1::WorkerMessage::kError: {
        const v1::Error& e = message.error();
        const absl::Status st(static_cast<absl::StatusCode>(e.code()),
                              absl::StrCat(worker->Describe(), ": ", e.message()));
        LOG(ERROR) << "cluster: " << st.message();
        PendingStep* p = instance == nullptr ? nullptr : instance->pending;
        if (p != nullptr && e.step_id() == p->step_id && p->error.ok()) {
          p->error = st;
          cv_.notify_all();
        }
        break;
      }
      case v1::WorkerMessage::kRegistration:
        LOG(WARNING) << "cluster: " << worker->Describe() << " sent a second registration; ignored";
        break;
      case v1::WorkerMessage::MSG_NOT_SET:
        break;
    }
  }
  for (auto& f : after) f();
}

grpc::Status ClusterService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  v1::WorkerMessage first;
  if (!stream->Read(&first)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "stream closed before registration");
  }
  if (!first.has_registration()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on a Cluster.Connect stream must be a Registration");
  }
  const v1::Registration& reg = first.registration();
  const std::string who = absl::StrCat("worker '", reg.worker_id(), "' from ", context->peer());
  if (!options_.join_token.empty() && reg.join_token() != options_.join_token) {
    LOG(WARNING) << "cluster: refused " << who << ": wrong join token";
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(who, ": join token rejected; start the worker with the "
                                          "coordinator's token (tessera worker --join-token T)"));
  }
  if (reg.protocol_version() != kProtocolVersion) {
    LOG(WARNING) << "cluster: refused " << who << ": protocol version " << reg.protocol_version();
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat(who, ": protocol version ", reg.protocol_version(), " (tessera ",
                     reg.tessera_version(), ") differs from the coordinator's ", kProtocolVersion,
                     " (tessera ", TesseraVersion(), "); run the same tessera build everywhere"));
  }
  auto worker = std::make_shared<Worker>();
  worker->registration = reg;
  worker->stream = stream;
  worker->context = context;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    }
    worker->id = reg.worker_id().empty() ? absl::StrCat("worker-", next_worker_number_++)
                                         : reg.worker_id();
    for (auto& w : workers_) {
      if (w->id == worker->id) {
        return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                            absl::StrCat("worker id '", worker->id,
                                         "' is connected already; give each worker its own "
                                         "--worker-id (or none)"));
      }
    }
    workers_.push_back(worker);
    if (worker_up_ != nullptr) {
      worker_up_->Labels({worker->id})->Set(1);
      heartbeat_age_->Labels({worker->id})->Set(0);
    }
  }
  LOG(INFO) << "cluster: worker '" << worker->id << "' joined from " << context->peer() << " ("
            << reg.device().kind() << ", " << reg.threads() << " threads, tessera "
            << reg.tessera_version() << ")";
  v1::CoordinatorMessage hello;
  v1::Registered* r = hello.mutable_registered();
  r->set_worker_id(worker->id);
  r->set_heartbeat_interval_ms(options_.heartbeat_interval.count());
  r->set_heartbeat_timeout_ms(options_.heartbeat_timeout.count());
  r->set_coordinator_version(TesseraVersion());
  Send(worker, hello);
  {
    std::vector<std::function<void()>> after;
    {
      std::lock_guard<std::mutex> lock(mu_);
      AssignLocked(&after);
    }
    for (auto& f : after) f();
  }

  v1::WorkerMessage message;
  while (stream->Read(&message)) HandleMessage(worker, message);

  {
    std::lock_guard<std::mutex> lock(worker->ctx_mu);
    worker->context = nullptr;
  }
  std::vector<std::function<void()>> after;
  {
    std::lock_guard<std::mutex> lock(mu_);
    MarkDownLocked(worker, shutdown_ ? "shut down" : "stream closed", &after);
  }
  for (auto& f : after) f();
  {
    std::lock_guard<std::mutex> lock(worker->write_mu);
    worker->closed = true;
  }
  return grpc::Status::OK;
}

void ClusterService::MonitorLoop() {
  const auto tick = std::min<std::chrono::milliseconds>(options_.heartbeat_interval / 2,
                                                        std::chrono::milliseconds(200));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_monitor_) {
    cv_.wait_for(lock, tick);
    if (stop_monitor_) break;
    std::vector<std::function<void()>> after;
    const auto now = Clock::now();
    std::vector<std::shared_ptr<Worker>> live = workers_;
    for (auto& w : live) {
      if (heartbeat_age_ != nullptr) {
        heartbeat_age_->Labels({w->id})->Set(
            std::chrono::duration<double>(now - w->last_heard).count());
      }
      if (now - w->last_heard > options_.heartbeat_timeout) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(now - w->last_heard).count();
        MarkDownLocked(w, absl::StrCat("no message for ", ms, " ms (heartbeat timeout ",
                                       options_.heartbeat_timeout.count(), " ms)"),
                       &after);
        after.push_back([w] { w->Cancel(); });
        continue;
      }
      if (now - w->last_heartbeat_sent >= options_.heartbeat_interval) {
        w->last_heartbeat_sent = now;
        v1::CoordinatorMessage msg;
        v1::Heartbeat* hb = msg.mutable_heartbeat();
        hb->set_seq(++w->heartbeat_seq);
        hb->set_send_unix_us(UnixMicros());
        hb->set_ack_seq(w->peer_seq);
        hb->set_ack_send_unix_us(w->peer_send_us);
        after.push_back([this, w, msg] { Send(w, msg); });
      }
    }
    lock.unlock();
    for (auto& f : after) f();
    lock.lock();
  }
}

std::vector<WorkerSnapshot> ClusterService::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerSnapshot> out;
  for (const auto& w : workers_) {
    WorkerSnapshot s;
    s.worker_id = w->id;
    switch (w->state) {
      case Worker::State::kIdle: s.state = "idle"; break;
      case Worker::State::kLoading: s.state = "loading"; break;
      case Worker::State::kReady: s.state = "ready"; break;
      case Worker::State::kDown: s.state = "down"; break;
    }
    s.instance_id = w->InstanceId();
    s.rank = w->rank;
    s.registration = w->registration;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<InstanceSnapshot> ClusterService::Instances() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<InstanceSnapshot> out;
  for (const auto& i : instances_) {
    InstanceSnapshot s;
    s.instance_id = i->spec.instance_id;
    s.generation = i->generation;
    s.ready = i->ready;
    s.capacity = i->capacity;
    for (const auto& w : i->ranks) s.rank_workers.push_back(w == nullptr ? "" : w->id);
    out.push_back(std::move(s));
  }
  return out;
}

bool ClusterService::WaitAllReady(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    for (const auto& i : instances_) {
      if (!i->ready) return false;
    }
    return true;
  });
}

void ClusterService::Shutdown(const std::string& reason) {
  std::vector<std::shared_ptr<Worker>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
    live = workers_;
  }
  cv_.notify_all();  // a step waiting for results gives up
  v1::CoordinatorMessage msg;
  msg.mutable_shutdown()->set_reason(reason);
  for (auto& w : live) Send(w, msg);
}

absl::StatusOr<v1::StepResult> ClusterService::ExecuteOn(Instance* instance,
                                                         const v1::StepPlan& plan) {
  ASSIGN_OR_RETURN(std::vector<v1::StepResult> results,
                   ExecuteOnRanks(instance, [&](int) -> const v1::StepPlan& { return plan; }));
  return std::move(results[0]);
}

absl::StatusOr<std::vector<v1::StepResult>> ClusterService::ExecuteOnRanks(
    Instance* instance, const std::function<const v1::StepPlan&(int rank)>& plan_of) {
  const v1::StepPlan& plan = plan_of(0);
  PendingStep pending;
  std::vector<std::shared_ptr<Worker>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return absl::UnavailableError("the coordinator is shutting down");
    if (!instance->ready) {
      std::vector<std::string> missing;
      for (size_t r = 0; r < instance->ranks.size(); ++r) {
        const auto& w = instance->ranks[r];
        if (w == nullptr) {
          missing.push_back(absl::StrCat("rank ", r, " has no worker"));
        } else if (w->state != Worker::State::kReady) {
          missing.push_back(absl::StrCat("rank ", r, " (worker '", w->id, "') is loading"));
        }
      }
      return absl::UnavailableError(absl::StrCat("instance '", instance->spec.instance_id,
                                                 "' is not ready: ", absl::StrJoin(missing, "; ")));
    }
    pending.step_id = plan.step_id();
    pending.generation = instance->generation;
    pending.sent = Clock::now();
    pending.results.resize(instance->ranks.size());
    instance->pending = &pending;
    targets = instance->ranks;
  }
  v1::CoordinatorMessage msg;
  const v1::StepPlan* last = nullptr;
  for (size_t r = 0; r < targets.size(); ++r) {
    auto& w = targets[r];
    const v1::StepPlan& mine = plan_of(static_cast<int>(r));
    if (&mine != last) *msg.mutable_step_plan() = mine;  // one copy while ranks share a plan
    last = &mine;
    if (!Send(w, msg)) {
      std::vector<std::function<void()>> after;
      {
        std::lock_guard<std::mutex> lock(mu_);
        MarkDownLocked(w, "sending a step plan failed", &after);
      }
      for (auto& f : after) f();
    }
  }
  const int world = static_cast<int>(targets.size());
  std::vector<std::function<void()>> after;
  absl::StatusOr<std::vector<v1::StepResult>> out;
  {
    std::unique_lock<std::mutex> lock(mu_);
    const bool done = cv_.wait_for(lock, options_.step_timeout, [&] {
      return pending.received == world || !pending.error.ok() || shutdown_;
    });
    instance->pending = nullptr;
    if (!pending.error.ok()) {
      out = pending.error;
    } else if (!done || pending.received != world) {
      std::vector<std::string> late;
      for (int r = 0; r < world; ++r) {
        if (pending.results[r].has_value()) continue;
        late.push_back(absl::StrCat("rank ", r, " (worker '", targets[r]->id, "')"));
        MarkDownLocked(targets[r],
                       absl::StrCat("no result for step ", plan.step_id(), " within ",
                                    options_.step_timeout.count(), " ms"),
                       &after);
        after.push_back([w = targets[r]] { w->Cancel(); });
      }
      out = absl::UnavailableError(absl::StrCat(
          "instance '", instance->spec.instance_id, "': step ", plan.step_id(), ": ",
          absl::StrJoin(late, ", "),
          shutdown_ ? " did not answer before shutdown"
                    : absl::StrCat(" did not answer within ", options_.step_timeout.count(),
                                   " ms")));
    } else {
      std::vector<v1::StepResult> all;
      for (auto& r : pending.results) all.push_back(std::move(*r));
      out = std::move(all);
    }
  }
  for (auto& f : after) f();
  return out;
}

KvCapacity ClusterExecutor::capacity() const {
  std::lock_guard<std::mutex> lock(service_->mu_);
  return instance_->capacity;
}

absl::StatusOr<v1::StepResult> ClusterExecutor::Execute(const v1::StepPlan& plan) {
  return service_->ExecuteOn(instance_, plan);
}

absl::StatusOr<std::vector<v1::StepResult>> ClusterExecutor::ExecuteOnRanks(
    const std::function<const v1::StepPlan&(int rank)>& plan_of) {
  return service_->ExecuteOnRanks(instance_, plan_of);
}

int ClusterExecutor::world_size() const {
  return static_cast<int>(instance_->ranks.size());
}

bool ClusterExecutor::ready() const {
  std::lock_guard<std::mutex> lock(service_->mu_);
  return instance_->ready;
}

const std::string& ClusterExecutor::instance_id() const { return instance_->spec.instance_id; }

}  // namespace tessera
