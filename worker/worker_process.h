// The worker process (`tessera worker`): one device's share of a model instance, driven by the
// coordinator over one outbound Cluster.Connect stream (proto/tessera/v1/cluster.proto,
// docs/cluster.md).
//
// Life cycle: dial the coordinator, register (device, memory, threads, capabilities, versions,
// join token, worker id), wait for an Assignment, load the checkpoint (progress on stderr and as
// LoadProgress messages), size the KV cache from the assignment, create a StepRunner, report
// Ready, then execute StepPlans in order and answer each with a StepResult (rank 0) or an
// acknowledgement (other ranks). Heartbeats go out every interval from their own thread; a
// reader thread tracks the coordinator's. A new Assignment replaces the runner (fresh state).
//
// Failure handling: a refused registration (wrong join token, protocol mismatch) is final. When
// the stream breaks or the coordinator's heartbeats stop, the worker reconnects with exponential
// backoff (0.1 s .. 2 s) under the same worker id for at most `reconnect_timeout`, then returns
// UNAVAILABLE naming the coordinator. A Shutdown message ends RunWorker() with OK.
//
// Thread safety: RunWorker() blocks its caller; run one per process.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "worker/checkpoint/checkpoint.h"

namespace tessera {

struct WorkerOptions {
  std::string coordinator;   // host:port of the coordinator's gRPC server
  std::string device = "cpu";  // "cpu" or "cuda:N" (UNIMPLEMENTED for now)
  int threads = 0;           // kernel threads (0 = default)
  WeightResidency weights = WeightResidency::kCopied;  // --weights copy|mmap
  std::string join_token;
  std::string worker_id;     // empty: the coordinator assigns one
  std::chrono::milliseconds reconnect_timeout{30000};
  bool progress = true;      // loading progress on stderr
};

absl::Status RunWorker(const WorkerOptions& options);

// `tessera worker --coordinator HOST:PORT [--device cpu] [--threads T] [--join-token T]
// [--worker-id ID] [--reconnect-timeout SECONDS]`.
int RunWorkerCommand(int argc, char** argv);

}  // namespace tessera
