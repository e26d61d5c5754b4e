#include "coordinator/serve_command.h"

#include <algorithm>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "coordinator/api/grpc_service.h"
#include "coordinator/cluster/cluster_service.h"
#include "coordinator/cluster/dp_attention_executor.h"
#include "coordinator/cluster/data_parallel_engine.h"
#include "coordinator/cluster/local_workers.h"
#include "coordinator/cluster/rendezvous_service.h"
#include "coordinator/engine/llm_engine.h"
#include "coordinator/text/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/base/flags.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "kernels/ops.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"

namespace tessera {
namespace {

// "512MiB", "2GiB", "1.5GB", "1048576" -> bytes.
absl::StatusOr<int64_t> ParseBytes(const std::string& flag, const std::string& text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  struct Unit {
    const char* suffix;
    double scale;
  };
  static const Unit kUnits[] = {{"kib", 1024.0}, {"mib", 1024.0 * 1024}, {"gib", 1024.0 * 1024 * 1024},
                                {"kb", 1e3},     {"mb", 1e6},            {"gb", 1e9},
                                {"k", 1024.0},   {"m", 1024.0 * 1024},   {"g", 1024.0 * 1024 * 1024},
                                {"b", 1.0}};
  double scale = 1;
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(t, u.suffix)) {
      scale = u.scale;
      t.resize(t.size() - strlen(u.suffix));
      break;
    }
  }
  double value = 0;
  if (!absl::SimpleAtod(t, &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " '", text, "': expected bytes like 1073741824, 512MiB or 2GiB"));
  }
  return static_cast<int64_t>(value * scale);
}

std::string BaseName(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

absl::Status RunServe(const ServeOptions& o) {
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  if (o.local_workers < 0) return absl::InvalidArgumentError("--local-workers must be >= 0");
  if (o.tensor_parallel_size < 1 || o.expert_parallel_size < 0 || o.pipeline_parallel_size < 1 ||
      o.dp_attention < 1) {
    return absl::InvalidArgumentError("--tp, --dp and --pp must be >= 1, --ep >= 0");
  }
  // Ranks per instance and their layout (worker/models/layers.h Shard, docs/sharding.md): pp
  // stages of max(tp * dp, ep) ranks; with dp > 1, ep = tp * dp; otherwise ep is 1, tp, or any
  // size with tp 1 (attention replicated).
  const int tp = o.tensor_parallel_size, dp_attn = o.dp_attention;
  const int ep_size = o.expert_parallel_size > 0 ? o.expert_parallel_size : tp * dp_attn;
  if ((dp_attn > 1 && ep_size != tp * dp_attn) ||
      (dp_attn == 1 && tp > 1 && ep_size != 1 && ep_size != tp)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout --tp ", tp, " --ep ", ep_size, " --dp ", dp_attn, " --pp ",
        o.pipeline_parallel_size,
        " is not supported: with --dp > 1, --ep must be --tp * --dp; otherwise --ep is 1, --tp, "
        "or any size with --tp 1"));
  }
  const int world = o.pipeline_parallel_size * std::max(tp * dp_attn, ep_size);
  // SIGINT/SIGTERM are taken by sigwait() below; block them before any thread starts so that
  // every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(o.model_dir));
  const std::string model_name =
      o.served_model_name.empty() ? BaseName(o.model_dir) : o.served_model_name;
  std::unique_ptr<Tokenizer> tokenizer;
  {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(o.model_dir);
    if (t.ok()) {
      tokenizer = std::move(*t);
    } else {
      LOG(WARNING) << "serve: no tokenizer (" << t.status().message()
                   << "); only prompt_token_ids requests are accepted";
    }
  }
  LlmEngineOptions eo;
  eo.model_name = model_name;
  eo.vocab_size = static_cast<int32_t>(config.vocab_size);
  eo.max_model_len = o.max_model_len > 0 ? o.max_model_len : config.max_position_embeddings;
  for (int64_t id : config.eos_token_ids) eo.eos_token_ids.push_back(static_cast<int32_t>(id));
  if (eo.eos_token_ids.empty() && tokenizer != nullptr && tokenizer->eos_id().has_value()) {
    eo.eos_token_ids.push_back(*tokenizer->eos_id());
  }
  eo.tokenizer = tokenizer.get();
  eo.max_num_batched_tokens = o.max_num_batched_tokens;
  eo.max_num_seqs = o.max_num_seqs;
  eo.start_ready = false;
  MetricsRegistry metrics;
  eo.metrics = &metrics;

  ClusterOptions co;
  co.metrics = &metrics;
  co.join_token = o.join_token;
  co.heartbeat_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.heartbeat_timeout_s * 1000));
  co.heartbeat_interval = std::min(std::chrono::milliseconds(1000), co.heartbeat_timeout / 3);
  co.step_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.step_timeout_s * 1000));
  auto cluster = std::make_unique<ClusterService>(co);
  auto rendezvous = std::make_unique<RendezvousService>();

  const int dp = o.data_parallel_size > 0
                     ? o.data_parallel_size
                     : std::max(1, o.local_workers / world);
  // One engine per instance, or per data-parallel-attention rank of an instance (they share its
  // workers through a DataParallelAttentionGroup); executors[i] is engine i's instance.
  std::vector<ClusterExecutor*> executors;
  std::vector<std::unique_ptr<DataParallelAttentionGroup>> dp_groups;
  std::vector<std::unique_ptr<LlmEngine>> engines;
  for (int i = 0; i < dp; ++i) {
    InstanceSpec spec;
    spec.instance_id = absl::StrCat(model_name, "-", i);
    spec.model_dir = o.model_dir;
    spec.world_size = world;
    spec.mesh.set_tp(tp);
    spec.mesh.set_ep(ep_size);
    spec.mesh.set_dp(dp_attn);
    spec.mesh.set_pp(o.pipeline_parallel_size);
    spec.kv_cache_bytes = o.kv_cache_memory;
    spec.kv_cache_fraction = static_cast<float>(o.kv_cache_fraction / std::max(1, o.local_workers));
    spec.block_size = o.block_size;
    spec.max_tokens_per_step = o.max_num_batched_tokens;
    ClusterExecutor* instance = cluster->AddInstance(spec);
    if (dp_attn > 1) {
      dp_groups.push_back(std::make_unique<DataParallelAttentionGroup>(instance, dp_attn, tp));
    }
    for (int d = 0; d < dp_attn; ++d) {
      StepExecutor* executor = dp_attn > 1 ? dp_groups.back()->executor(d) : instance;
      executors.push_back(instance);
      ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(executor, eo));
      engines.push_back(std::move(engine));
    }
  }
  std::vector<Engine*> replicas;
  for (auto& e : engines) replicas.push_back(e.get());
  DataParallelEngine router(replicas);
  GenerationService generation(&router, tokenizer.get(), model_name);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  const std::string grpc_address = absl::StrCat(o.host, ":", o.grpc_port);
  builder.AddListeningPort(grpc_address, grpc::InsecureServerCredentials(), &grpc_port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterService(cluster.get());
  builder.RegisterService(rendezvous.get());
  builder.RegisterService(&generation);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat("could not listen on ", grpc_address,
                                               " (port in use?); pick another --grpc-port"));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(model_name, false);
  // Readiness follows the instances: the engine of an instance that came back is told it may
  // schedule again; the model is SERVING while every instance is ready.
  cluster->AddListener([&, health](const std::string& instance_id, bool) {
    bool all = true;
    for (size_t i = 0; i < executors.size(); ++i) {
      const bool ready = executors[i]->ready();
      if (executors[i]->instance_id() == instance_id) engines[i]->SetReady(ready);
      all = all && ready;
    }
    health->SetServingStatus(model_name, all);
  });

  // The OpenAI-compatible HTTP API (coordinator/api/http_server.h); --http-port 0 disables it.
  std::unique_ptr<api::HttpServer> http;
  if (o.http_port != 0) {
    api::HttpApiContext hc;
    hc.host = o.host;
    hc.port = o.http_port;
    hc.model_dir = o.model_dir;
    hc.model_type = config.model_type;
    hc.served_model_name = model_name;
    hc.engine = &router;
    hc.tokenizer = tokenizer.get();  // null: token-id completions only
    hc.vocab_size = static_cast<int32_t>(config.vocab_size);
    hc.metrics_text = [&metrics] { return metrics.Render(); };
    ASSIGN_OR_RETURN(http, api::StartHttpApi(o.http, hc));
  }

  std::unique_ptr<LocalWorkerSupervisor> supervisor;
  if (o.local_workers > 0) {
    const std::string dial_host =
        (o.host == "0.0.0.0" || o.host == "::" || o.host == "[::]") ? "127.0.0.1" : o.host;
    std::vector<std::vector<std::string>> args;
    for (int i = 0; i < o.local_workers; ++i) {
      std::vector<std::string> a = {"worker", "--coordinator",
                                    absl::StrCat(dial_host, ":", grpc_port), "--worker-id",
                                    absl::StrCat("local-", i)};
      if (!o.join_token.empty()) a.insert(a.end(), {"--join-token", o.join_token});
      if (o.worker_threads > 0) a.insert(a.end(), {"--threads", absl::StrCat(o.worker_threads)});
      a.insert(a.end(), {"--weights", o.worker_weights});
      if (!o.worker_activation_dtype.empty()) {
        a.insert(a.end(), {"--activation-dtype", o.worker_activation_dtype});
      }
      args.push_back(std::move(a));
    }
    supervisor = std::make_unique<LocalWorkerSupervisor>(o.local_workers, std::move(args),
                                                         o.worker_program);
    RETURN_IF_ERROR(supervisor->Start());
  }
  std::printf("tessera serve: model '%s' (%d instance(s) x %d rank(s), %d data-parallel "
              "attention rank(s) each), gRPC on %s:%d, %d local worker(s)\n",
              model_name.c_str(), dp, world, dp_attn, o.host.c_str(), grpc_port,
              o.local_workers);
  if (http != nullptr) {
    std::printf("tessera serve: OpenAI API on %s://%s:%d/v1\n", http->tls() ? "https" : "http",
                o.host.c_str(), http->port());
  }
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  LOG(INFO) << "serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down";
  health->SetServingStatus(model_name, false);
  health->SetServingStatus("", false);
  if (http != nullptr) http->Shutdown(absl::Seconds(5));
  cluster->Shutdown("the coordinator is stopping");
  if (supervisor != nullptr) supervisor->Stop(std::chrono::milliseconds(3000));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  engines.clear();
  rendezvous->Shutdown();
  return absl::OkStatus();
}

int RunServeCommand(int argc, char** argv) {
  FlagParser parser("serve", "serve a model over gRPC (and HTTP) with local and remote workers");
  ServeOptions o;
  std::string kv_memory;
  parser.AddString("model", &o.model_dir, "checkpoint directory (config.json + *.safetensors)");
  parser.AddString("host", &o.host, "address to listen on");
  parser.AddInt("grpc-port", &o.grpc_port, "gRPC port: API + worker cluster (0: pick one)");
  parser.AddInt("http-port", &o.http_port, "OpenAI-compatible HTTP port (0: disabled)");
  parser.AddInt("local-workers", &o.local_workers, "worker processes to start on this machine");
  parser.AddString("join-token", &o.join_token, "secret workers must present (empty: none)");
  parser.AddInt("max-num-seqs", &o.max_num_seqs, "running sequences per instance at most");
  parser.AddInt("max-num-batched-tokens", &o.max_num_batched_tokens, "token budget of one step");
  parser.AddString("kv-cache-memory", &kv_memory,
                   "KV cache bytes per worker (e.g. 2GiB; default: a share of free memory)");
  parser.AddString("served-model-name", &o.served_model_name,
                   "model name in the API (default: the model directory's name)");
  parser.AddInt("block-size", &o.block_size, "KV cache block size in tokens");
  parser.AddInt("max-model-len", &o.max_model_len, "context length (0: from config.json)");
  parser.AddInt("tensor-parallel-size", &o.tensor_parallel_size, "tensor-parallel ranks");
  parser.AddInt("tp", &o.tensor_parallel_size, "tensor-parallel ranks (= --tensor-parallel-size)");
  parser.AddInt("ep", &o.expert_parallel_size, "expert-parallel ranks per stage (0: --tp * --dp)");
  parser.AddInt("dp", &o.dp_attention,
                "data-parallel attention ranks per instance (own requests and KV cache each)");
  parser.AddInt("pp", &o.pipeline_parallel_size, "pipeline stages");
  parser.AddInt("data-parallel-size", &o.data_parallel_size,
                "model instances (0: local workers / tensor parallel size)");
  parser.AddDouble("heartbeat-timeout", &o.heartbeat_timeout_s,
                   "seconds without a message before a worker is marked down");
  parser.AddDouble("step-timeout", &o.step_timeout_s,
                   "seconds a step may take before its missing workers are marked down");
  parser.AddInt("worker-threads", &o.worker_threads, "kernel threads of each local worker");
  parser.AddString("worker-weights", &o.worker_weights,
                   "--weights of each local worker: copy (huge-page memory, faster decode) or "
                   "mmap (page cache, faster start, shared between the local workers)");
  parser.AddString("worker-activation-dtype", &o.worker_activation_dtype,
                   absl::StrCat("--activation-dtype of each local worker: ", kActivationDTypeHelp));
  api::AddHttpApiFlags(&parser, &o.http);
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (!kv_memory.empty()) {
      ASSIGN_OR_RETURN(o.kv_cache_memory, ParseBytes("kv-cache-memory", kv_memory));
    }
    RETURN_IF_ERROR(ParseWeightResidency(o.worker_weights, "--worker-weights").status());
    if (!o.worker_activation_dtype.empty()) {
      RETURN_IF_ERROR(
          ParseActivationDType(o.worker_activation_dtype, "--worker-activation-dtype").status());
    }
    return RunServe(o);
  });
}

}  // namespace tessera
