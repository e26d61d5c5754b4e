// `tessera serve`: the coordinator process (DESIGN.md section 1; docs/cluster.md).
//
// Starts, in order: the model's config and tokenizer, the cluster (ClusterService + Rendezvous
// on the gRPC port, where remote `tessera worker`s dial in), one LlmEngine per model instance
// behind a DataParallelEngine, the public gRPC API (Generation, grpc.health.v1.Health, server
// reflection) on the same port, the OpenAI HTTP API (--http-port; 0 disables it), and
// --local-workers worker processes supervised on this machine. Then it serves until SIGINT or
// SIGTERM: health turns NOT_SERVING, workers are told to shut down, open streams are cancelled,
// children are reaped, and the process exits 0.
//
// Instances: --tensor-parallel-size ranks each (world size), --data-parallel-size replicas
// (default: local workers / tp, at least 1). Health: "" is SERVING while the server runs;
// "<served model name>" is SERVING while every instance is ready (a worker down: NOT_SERVING;
// requests still go to the replicas that are ready).
//
// Thread safety: RunServe() blocks the calling thread and handles the process's SIGINT/SIGTERM.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "coordinator/api/http_server.h"

namespace tessera {

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int grpc_port = 50051;  // 0: pick a free port (printed on stdout)
  int http_port = 8000;   // 0: no HTTP API
  int local_workers = 1;
  std::string join_token;
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int64_t kv_cache_memory = 0;  // bytes per rank; 0: kv_cache_fraction of free memory
  double kv_cache_fraction = 0.3;
  std::string served_model_name;  // default: the model directory's name
  int block_size = 16;
  int64_t max_model_len = 0;      // 0: the config's max_position_embeddings
  int tensor_parallel_size = 1;   // --tp: attention heads / dense layers split over ranks
  int expert_parallel_size = 0;   // --ep: 0 = tp * dp_attention (experts whole per rank)
  int pipeline_parallel_size = 1; // --pp: layers split into stages of tp / ep / dp ranks
  // --dp: data-parallel attention ranks per instance: each its own engine (requests, scheduler,
  // KV cache) and tp ranks; MoE experts partitioned over all of them (ep = tp * dp), tokens
  // dispatched / combined by all-to-all-v (docs/sharding.md).
  int dp_attention = 1;
  int data_parallel_size = 0;     // instances (replicas); 0: local_workers / ranks per instance
  double heartbeat_timeout_s = 3;
  double step_timeout_s = 120;
  int worker_threads = 0;         // --threads of local workers (0: their default)
  std::string worker_weights = "copy";  // --weights of local workers: copy or mmap
  std::string worker_activation_dtype;  // --activation-dtype of local workers (empty: theirs)
  std::string worker_program = "/proc/self/exe";
  api::HttpApiFlags http;  // --api-key, --tls-cert/--tls-key, --output-format, ...
};

absl::Status RunServe(const ServeOptions& options);
int RunServeCommand(int argc, char** argv);

}  // namespace tessera
