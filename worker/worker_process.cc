#include "worker/worker_process.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "kernels/base/flags.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/ops.h"
#include "tessera/v1/cluster.grpc.pb.h"
#include "worker/models/model.h"
#include "worker/rendezvous_kv_store.h"
#include "worker/step_runner.h"
#include "worker/version.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// MemTotal / MemAvailable from /proc/meminfo, in bytes (0 when unreadable).
std::pair<int64_t, int64_t> HostMemory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  int64_t total = 0, avail = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() < 2) continue;
    int64_t kb = 0;
    if (!absl::SimpleAtoi(parts[1], &kb)) continue;
    if (parts[0] == "MemTotal:") total = kb * 1024;
    if (parts[0] == "MemAvailable:") avail = kb * 1024;
  }
  return {total, avail};
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return std::string(absl::StripAsciiWhitespace(line.substr(pos + 1)));
    }
  }
  return "cpu";
}

v1::Registration MakeRegistration(const WorkerOptions& options, const std::string& worker_id) {
  v1::Registration reg;
  reg.set_worker_id(worker_id);
  reg.set_join_token(options.join_token);
  reg.set_protocol_version(kProtocolVersion);
  reg.set_tessera_version(TesseraVersion());
  v1::DeviceInfo* dev = reg.mutable_device();
  dev->set_kind("cpu");
  dev->set_index(0);
  dev->set_name(CpuName());
  auto [total, avail] = HostMemory();
  dev->set_memory_total_bytes(total);
  dev->set_memory_free_bytes(avail);
  reg.set_threads(ThreadPool::Default().num_threads());
  reg.add_capabilities("cpu");
  reg.add_capabilities(std::string(cpu::IsaName(cpu::ActiveIsa())));
  if (cpu::ActiveIsaHasBf16()) reg.add_capabilities("avx512_bf16");
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) == 0) reg.set_hostname(host);
  reg.set_pid(getpid());
  return reg;
}

// One connection to the coordinator: registration, then messages until Shutdown or a break.
class Session {
 public:
  Session(const WorkerOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options), channel_(channel), stub_(v1::Cluster::NewStub(channel)) {}

  struct Outcome {
    absl::Status status;      // why the stream ended
    bool registered = false;  // the coordinator accepted the registration
    bool shutdown = false;    // the coordinator asked us to exit
  };

  Outcome Run(std::string* worker_id) {
    Outcome outcome;
    stream_ = stub_->Connect(&context_);
    v1::WorkerMessage hello;
    *hello.mutable_registration() = MakeRegistration(options_, *worker_id);
    v1::CoordinatorMessage first;
    if (!stream_->Write(hello) || !stream_->Read(&first)) {
      outcome.status = Finish();
      if (outcome.status.ok()) outcome.status = absl::UnavailableError("stream closed at once");
      return outcome;
    }
    if (!first.has_registered()) {
      context_.TryCancel();
      (void)Finish();
      outcome.status = absl::InternalError("the coordinator did not answer with Registered");
      return outcome;
    }
    outcome.registered = true;
    *worker_id = first.registered().worker_id();
    interval_ = std::chrono::milliseconds(
        std::max<int64_t>(50, first.registered().heartbeat_interval_ms()));
    timeout_ = std::chrono::milliseconds(
        std::max<int64_t>(200, first.registered().heartbeat_timeout_ms()));
    LOG(INFO) << "worker: registered with " << options_.coordinator << " as '" << *worker_id
              << "'";
    last_heard_ = Clock::now();
    std::thread reader([this] { ReadLoop(); });
    std::thread heartbeat([this] { HeartbeatLoop(); });

    while (true) {
      std::optional<v1::CoordinatorMessage> msg = Pop();
      if (!msg.has_value()) break;  // stream ended
      if (msg->has_shutdown()) {
        LOG(INFO) << "worker: shutdown requested: " << msg->shutdown().reason();
        outcome.shutdown = true;
        break;
      }
      if (msg->has_assignment()) {
        HandleAssignment(msg->assignment());
      } else if (msg->has_step_plan()) {
        HandlePlan(msg->step_plan());
      } else if (msg->has_error()) {
        LOG(ERROR) << "worker: coordinator error: " << msg->error().message();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    heartbeat.join();
    if (outcome.shutdown) {
      std::lock_guard<std::mutex> lock(write_mu_);
      stream_->WritesDone();
    } else {
      context_.TryCancel();
    }
    reader.join();
    outcome.status = Finish();
    if (outcome.status.ok() && !outcome.shutdown) {
      outcome.status = absl::UnavailableError("the coordinator closed the stream");
    }
    if (!lost_reason_.empty()) outcome.status = absl::UnavailableError(lost_reason_);
    return outcome;
  }

 private:
  absl::Status Finish() {
    grpc::Status st = stream_->Finish();
    if (st.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  }

  bool Write(const v1::WorkerMessage& msg) {
    std::lock_guard<std::mutex> lock(write_mu_);
    return stream_->Write(msg);
  }

  void ReadLoop() {
    v1::CoordinatorMessage msg;
    while (stream_->Read(&msg)) {
      std::lock_guard<std::mutex> lock(mu_);
      last_heard_ = Clock::now();
      if (msg.has_heartbeat()) {
        peer_seq_ = msg.heartbeat().seq();
        peer_send_us_ = msg.heartbeat().send_unix_us();
        continue;
      }
      queue_.push_back(std::move(msg));
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    eof_ = true;
    cv_.notify_all();
  }

  void HeartbeatLoop() {
    uint64_t seq = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_ && !eof_) {
      cv_.wait_for(lock, interval_);
      if (stop_ || eof_) break;
      const auto silent = Clock::now() - last_heard_;
      if (silent > timeout_) {
        lost_reason_ = absl::StrCat(
            "no message from the coordinator at ", options_.coordinator, " for ",
            std::chrono::duration_cast<std::chrono::milliseconds>(silent).count(), " ms");
        LOG(WARNING) << "worker: " << lost_reason_;
        context_.TryCancel();
        break;
      }
      v1::WorkerMessage hb;
      hb.mutable_heartbeat()->set_seq(++seq);
      hb.mutable_heartbeat()->set_send_unix_us(UnixMicros());
      hb.mutable_heartbeat()->set_ack_seq(peer_seq_);
      hb.mutable_heartbeat()->set_ack_send_unix_us(peer_send_us_);
      lock.unlock();
      Write(hb);
      lock.lock();
    }
  }

  std::optional<v1::CoordinatorMessage> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || eof_; });
    if (queue_.empty()) return std::nullopt;
    v1::CoordinatorMessage msg = std::move(queue_.front());
    queue_.pop_front();
    return msg;
  }

  void SendLoadError(const v1::Assignment& a, const absl::Status& st) {
    LOG(ERROR) << "worker: loading " << a.model_dir() << " failed: " << st.message();
    v1::WorkerMessage msg;
    v1::LoadProgress* p = msg.mutable_load_progress();
    p->set_instance_id(a.instance_id());
    p->set_generation(a.generation());
    p->set_error(std::string(st.message()));
    Write(msg);
  }

  void HandleAssignment(const v1::Assignment& a) {
    runner_.reset();
    comm_.reset();
    rank_ = a.rank();
    // The driver of each data-parallel-attention rank (tp rank 0 of stage 0: world rank
    // dp_rank * tp) returns its sampled tokens; the other ranks only acknowledge.
    {
      const int tp = std::max(1, a.mesh().tp()), dp = std::max(1, a.mesh().dp());
      driver_ = rank_ % tp == 0 && rank_ < tp * dp;
    }
    LOG(INFO) << "worker: assigned rank " << a.rank() << "/" << a.world_size() << " of instance '"
              << a.instance_id() << "' (generation " << a.generation() << "), model "
              << a.model_dir();
    const auto t0 = Clock::now();
    ModelLoadOptions load;
    load.weights = options_.weights;
    if (a.world_size() > 1) {
      // The instance's Gloo group (bootstrapped through the coordinator's Rendezvous service);
      // the model's layout comes from the assignment's mesh (worker/models/layers.h Shard).
      const bool local = absl::StartsWith(options_.coordinator, "127.") ||
                         absl::StartsWith(options_.coordinator, "localhost");
      absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
          ConnectInstanceGroup(a, channel_, local ? "127.0.0.1" : "");
      if (!comm.ok()) return SendLoadError(a, comm.status());
      comm_ = std::move(*comm);
      const v1::MeshShape& m = a.mesh();
      load.SetLayout(std::max(1, m.tp()), std::max(1, m.ep()), std::max(1, m.dp()),
                     std::max(1, m.pp()), a.rank());
      load.comm = comm_.get();
    }
    load.progress = [&](int done, int total) {
      if (options_.progress) {
        std::fprintf(stderr, "\rworker: loading layers %d/%d", done, total);
        if (done == total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      }
      v1::WorkerMessage msg;
      v1::LoadProgress* p = msg.mutable_load_progress();
      p->set_instance_id(a.instance_id());
      p->set_generation(a.generation());
      p->set_layers_loaded(done);
      p->set_layers_total(total);
      Write(msg);
    };
    absl::StatusOr<LoadedModel> loaded = LoadModelFromDirectory(a.model_dir(), load);
    if (!loaded.ok()) return SendLoadError(a, loaded.status());
    const int block_size = a.block_size() > 0 ? a.block_size() : 16;
    const int64_t per_block = KvBytesPerBlock(loaded->model->KvSpecs(), block_size);
    int64_t kv_bytes = a.kv_cache_bytes();
    if (a.kv_cache_case() == v1::Assignment::kKvCacheFraction) {
      kv_bytes = static_cast<int64_t>(HostMemory().second * a.kv_cache_fraction());
    }
    const int64_t blocks = per_block > 0 ? kv_bytes / per_block : 0;
    if (blocks < 1) {
      return SendLoadError(a, absl::ResourceExhaustedError(absl::StrCat(
                                  "a KV cache of ", kv_bytes, " bytes holds no block of ",
                                  per_block, " bytes; raise --kv-cache-memory")));
    }
    StepRunnerOptions ro;
    ro.block_size = block_size;
    ro.num_blocks = static_cast<int>(std::min<int64_t>(blocks, INT32_MAX / 2));
    const int layers = static_cast<int>(loaded->model->KvSpecs().size());
    absl::StatusOr<std::unique_ptr<StepRunner>> runner =
        StepRunner::Create(std::move(*loaded), ro);
    if (!runner.ok()) return SendLoadError(a, runner.status());
    runner_ = std::move(*runner);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    v1::WorkerMessage done;
    v1::LoadProgress* p = done.mutable_load_progress();
    p->set_instance_id(a.instance_id());
    p->set_generation(a.generation());
    p->set_layers_loaded(layers);
    p->set_layers_total(layers);
    p->set_done(true);
    Write(done);
    v1::WorkerMessage ready;
    v1::Ready* r = ready.mutable_ready();
    r->set_instance_id(a.instance_id());
    r->set_rank(a.rank());
    r->set_generation(a.generation());
    r->set_num_blocks(runner_->capacity().num_blocks);
    r->set_block_size(runner_->capacity().block_size);
    r->set_load_seconds(seconds);
    LOG(INFO) << "worker: ready, " << r->num_blocks() << " KV blocks of " << r->block_size()
              << " tokens (" << kv_bytes / (1 << 20) << " MiB), loaded in " << seconds << " s";
    Write(ready);
  }

  void HandlePlan(const v1::StepPlan& plan) {
    v1::WorkerMessage out;
    if (runner_ == nullptr) {
      v1::Error* e = out.mutable_error();
      e->set_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
      e->set_message(absl::StrCat("step ", plan.step_id(), ": no model is loaded"));
      e->set_step_id(plan.step_id());
      Write(out);
      return;
    }
    absl::StatusOr<v1::StepResult> result = runner_->Execute(plan);
    if (!result.ok()) {
      v1::Error* e = out.mutable_error();
      e->set_code(static_cast<int>(result.status().code()));
      e->set_message(absl::StrCat("step ", plan.step_id(), ": ", result.status().message()));
      e->set_step_id(plan.step_id());
    } else if (driver_) {
      *out.mutable_step_result() = std::move(*result);
    } else {
      out.mutable_step_result()->set_step_id(plan.step_id());
    }
    Write(out);
  }

  const WorkerOptions& options_;
  std::unique_ptr<v1::Cluster::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream_;
  std::mutex write_mu_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::CoordinatorMessage> queue_;
  bool eof_ = false;
  bool stop_ = false;
  Clock::time_point last_heard_;
  uint64_t peer_seq_ = 0;
  int64_t peer_send_us_ = 0;
  std::string lost_reason_;  // written by the heartbeat thread before it cancels
  std::chrono::milliseconds interval_{1000};
  std::chrono::milliseconds timeout_{3000};

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GlooCommunicator> comm_;  // declared before runner_: the model borrows it
  std::unique_ptr<StepRunner> runner_;
  bool driver_ = false;
  int rank_ = 0;
};

bool IsFinal(const absl::Status& st) {
  return st.code() == absl::StatusCode::kPermissionDenied ||
         st.code() == absl::StatusCode::kFailedPrecondition ||
         st.code() == absl::StatusCode::kInvalidArgument ||
         st.code() == absl::StatusCode::kUnauthenticated;
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options) {
  if (absl::StartsWith(options.device, "cuda")) {
    return absl::UnimplementedError(absl::StrCat(
        "--device ", options.device,
        ": CUDA workers are not implemented yet; use --device cpu"));
  }
  if (options.device != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device '", options.device, "': expected cpu or cuda:N"));
  }
  if (options.coordinator.empty()) {
    return absl::InvalidArgumentError("--coordinator HOST:PORT is required");
  }
  if (options.threads > 0) ThreadPool::SetDefaultThreads(options.threads);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Reconnect quickly after a coordinator restart instead of the default 1..120 s backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.coordinator, grpc::InsecureChannelCredentials(), args);
  std::string worker_id = options.worker_id;
  bool ever_registered = false;
  auto window_start = Clock::now();
  auto backoff = std::chrono::milliseconds(100);
  absl::Status last;
  while (true) {
    Session session(options, channel);
    Session::Outcome outcome = session.Run(&worker_id);
    if (outcome.shutdown) return absl::OkStatus();
    last = outcome.status;
    if (IsFinal(last) || (!ever_registered && last.code() == absl::StatusCode::kAlreadyExists)) {
      return last;
    }
    if (outcome.registered) {
      ever_registered = true;
      window_start = Clock::now();
      backoff = std::chrono::milliseconds(100);
      LOG(WARNING) << "worker: lost the coordinator at " << options.coordinator << ": "
                   << last.message() << "; reconnecting for up to "
                   << options.reconnect_timeout.count() / 1000.0 << " s";
    }
    if (Clock::now() - window_start > options.reconnect_timeout) {
      return absl::UnavailableError(absl::StrCat(
          "could not reach the coordinator at ", options.coordinator, " for ",
          options.reconnect_timeout.count() / 1000.0, " s (last error: ", last.message(),
          "); is `tessera serve` running there?"));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    // Wait for the channel to come up (bounded by the backoff) so a dead coordinator does not
    // turn into a tight loop of failed streams.
    channel->WaitForConnected(std::chrono::system_clock::now() + backoff);
  }
}

int RunWorkerCommand(int argc, char** argv) {
  FlagParser parser("worker", "join a coordinator and execute its steps on this machine");
  WorkerOptions o;
  double reconnect_s = 30;
  parser.AddString("coordinator", &o.coordinator, "HOST:PORT of `tessera serve`'s gRPC port");
  parser.AddString("device", &o.device, "cpu or cuda:N");
  parser.AddInt("threads", &o.threads, "kernel threads (0 = default)");
  std::string weights = "copy";
  parser.AddString("weights", &weights, kWeightResidencyHelp);
  std::string activation_dtype;
  parser.AddString("activation-dtype", &activation_dtype, kActivationDTypeHelp);
  parser.AddString("join-token", &o.join_token, "the coordinator's --join-token");
  parser.AddString("worker-id", &o.worker_id, "stable id of this worker (default: assigned)");
  parser.AddDouble("reconnect-timeout", &reconnect_s,
                   "seconds to keep reconnecting to a lost coordinator before exiting");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    o.reconnect_timeout = std::chrono::milliseconds(static_cast<int64_t>(reconnect_s * 1000));
    ASSIGN_OR_RETURN(o.weights, ParseWeightResidency(weights));
    RETURN_IF_ERROR(ApplyActivationDTypeFlag(activation_dtype, "--activation-dtype"));
    return RunWorker(o);
  });
}

}  // namespace tessera
