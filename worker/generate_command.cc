#include "worker/generate_command.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "parallel/gloo_communicator.h"
#include "parallel/kv_store.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/model_runner.h"
#include "worker/models/layers.h"
#include "worker/models/model.h"
#include "worker/npy.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt-ids: '", part,
                                                     "' is not an integer"));
    }
    ids.push_back(v);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids: no token ids given");
  return ids;
}

}  // namespace

int GenerateWorldSize(int tp, int ep, int dp, int pp) {
  return pp * std::max(tp * dp, ep);
}

absl::StatusOr<GenerateResult> Generate(const GenerateOptions& options) {
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError("--max-tokens must be >= 1");
  }
  if (options.block_size < 1) return absl::InvalidArgumentError("--block-size must be >= 1");
  GenerateResult result;
  result.prompt_ids = options.prompt_ids;
  const auto t0 = Clock::now();
  ModelLoadOptions load;
  const int world = GenerateWorldSize(options.tp, options.ep, options.dp, options.pp);
  load.SetLayout(options.tp, options.ep, options.dp, options.pp, options.rank);
  load.comm = world > 1 ? options.comm : nullptr;
  load.weights = options.weights;
  if (options.progress) {
    load.progress = [](int done, int total) {
      std::fprintf(stderr, "\rloading layers %d/%d", done, total);
      if (done == total) std::fprintf(stderr, "\n");
      std::fflush(stderr);
    };
  }
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelFromDirectory(options.model_dir, load));
  const auto t1 = Clock::now();
  result.load_s = Seconds(t0, t1);
  // Every rank's weight bytes (what its loader asked the checkpoint for), gathered on rank 0.
  {
    const int64_t mine[] = {static_cast<int64_t>(loaded.checkpoint->bytes_loaded())};
    Tensor t = Tensor::FromVector(absl::MakeConstSpan(mine), {1});
    if (world > 1) {
      ASSIGN_OR_RETURN(Tensor all, Tensor::Empty({world}, DType::kI64));
      RETURN_IF_ERROR(options.comm->AllGather(t, all));
      t = all;
    }
    result.rank_weight_bytes.assign(t.data<int64_t>(), t.data<int64_t>() + world);
  }
  const std::vector<int64_t> eos = loaded.config->eos_token_ids;

  ModelRunnerOptions ro;
  ro.block_size = options.block_size;
  int64_t kv_tokens = options.kv_cache_tokens;
  const int64_t needed = static_cast<int64_t>(options.prompt_ids.size()) + options.max_tokens;
  if (kv_tokens <= 0) kv_tokens = needed;
  if (kv_tokens < needed) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-cache-tokens ", kv_tokens,
                                                   " is smaller than prompt + max tokens (",
                                                   needed, ")"));
  }
  ro.num_blocks = static_cast<int>((kv_tokens + ro.block_size - 1) / ro.block_size);
  ro.max_tokens_per_step = options.max_batch_tokens;
  ro.return_logits = !options.dump_logits.empty();
  ro.seed = options.seed >= 0 ? static_cast<uint64_t>(options.seed) : 0;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   ModelRunner::Create(std::move(loaded.model), ro));
  SamplingParams sp;
  sp.temperature = options.temperature;
  sp.top_p = options.top_p;
  sp.top_k = options.top_k;
  if (options.seed >= 0) sp.seed = static_cast<uint64_t>(options.seed);
  // Data parallel: the request is DP rank 0's (its tp ranks and pipeline stages). Every step
  // rank 0 announces (broadcast 1) that a forward pass follows, and the other DP ranks join its
  // MoE dispatch / combine with zero tokens; 0 ends the run.
  const bool data_parallel = options.dp > 1;
  auto announce = [&](int32_t flag) -> absl::StatusOr<int32_t> {
    const int32_t value[] = {flag};
    Tensor t = Tensor::FromVector(absl::MakeConstSpan(value), {1});
    RETURN_IF_ERROR(options.comm->Broadcast(t, 0));
    return t.data<int32_t>()[0];
  };
  if (data_parallel && load.dp_rank != 0) {
    for (;;) {
      ASSIGN_OR_RETURN(int32_t more, announce(0));
      if (more == 0) break;
      RETURN_IF_ERROR(runner->model().ForwardIdle());
    }
    return result;
  }
  RETURN_IF_ERROR(runner->AddSequence(0, options.prompt_ids, sp));

  std::vector<float> dumped;
  int64_t vocab = runner->model().vocab_size();
  int64_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  result.finish_reason = "length";
  bool done = false;
  while (!done) {
    const auto s0 = Clock::now();
    const CommStats c0 = CommStatsSnapshot();
    if (data_parallel) RETURN_IF_ERROR(announce(1).status());
    ASSIGN_OR_RETURN(std::vector<StepOutput> outs, runner->Step());
    const double dt = Seconds(s0, Clock::now());
    if (runner->last_prefill_tokens() > 0) {
      prefill_tokens += runner->last_prefill_tokens();
      prefill_s += dt;
    } else {
      decode_tokens += runner->last_decode_tokens();
      decode_s += dt;
      ++result.decode_steps;
      const CommStats d = CommStatsDiff(CommStatsSnapshot(), c0);
      for (size_t i = 0; i < d.size(); ++i) {
        result.decode_comm[i].calls += d[i].calls;
        result.decode_comm[i].nanos += d[i].nanos;
        result.decode_comm[i].bytes += d[i].bytes;
      }
    }
    for (StepOutput& o : outs) {
      result.output_ids.push_back(o.token);
      if (ro.return_logits) dumped.insert(dumped.end(), o.logits.begin(), o.logits.end());
      for (int64_t e : eos) {
        if (o.token == e) {
          result.finish_reason = "stop";
          done = true;
        }
      }
      if (static_cast<int>(result.output_ids.size()) >= options.max_tokens) done = true;
    }
    if (runner->last_prefill_tokens() == 0 && runner->last_decode_tokens() == 0) {
      return absl::InternalError("generate: the runner made no progress");
    }
  }
  if (data_parallel) RETURN_IF_ERROR(announce(0).status());
  result.prefill_tokens_per_s = prefill_s > 0 ? prefill_tokens / prefill_s : 0;
  result.decode_tokens_per_s = decode_s > 0 ? decode_tokens / decode_s : 0;
  result.decode_s = decode_s;
  if (!options.dump_logits.empty() && options.rank == 0) {
    const int64_t steps = static_cast<int64_t>(result.output_ids.size());
    Tensor t = Tensor::FromVector(absl::MakeConstSpan(dumped), {steps, vocab});
    RETURN_IF_ERROR(WriteNpy(options.dump_logits, t));
  }
  return result;
}

namespace {

extern "C" char** environ;

// The other ranks of a sharded run: this binary again, with the same flags plus --rank and
// --rendezvous. Their stdout is discarded (rank 0 prints the result), stderr is kept.
class RankProcesses {
 public:
  ~RankProcesses() {
    for (pid_t pid : pids_) {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  }

  absl::Status Spawn(int argc, char** argv, int world, const std::string& dir) {
    for (int r = 1; r < world; ++r) {
      std::vector<std::string> args = {"/proc/self/exe"};
      for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
      args.push_back(absl::StrCat("--rank=", r));
      args.push_back(absl::StrCat("--rendezvous=", dir));
      std::vector<char*> cargs;
      for (std::string& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
      pid_t pid = 0;
      const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, cargs.data(), environ);
      posix_spawn_file_actions_destroy(&fa);
      if (rc != 0) {
        return absl::InternalError(absl::StrCat("cannot start rank ", r, ": ", strerror(rc)));
      }
      pids_.push_back(pid);
    }
    return absl::OkStatus();
  }

  // Waits (bounded) for every rank; an error names the first rank that failed.
  absl::Status Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    absl::Status result;
    for (size_t i = 0; i < pids_.size(); ++i) {
      int status = 0;
      pid_t done = 0;
      while ((done = waitpid(pids_[i], &status, WNOHANG)) == 0 && absl::Now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (done == 0) {
        if (result.ok()) {
          result = absl::DeadlineExceededError(absl::StrCat("rank ", i + 1, " did not finish"));
        }
        continue;  // the destructor kills it
      }
      pids_[i] = -1;
      if (result.ok() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        result = absl::InternalError(absl::StrCat(
            "rank ", i + 1, WIFSIGNALED(status) ? " was killed by signal " : " exited with code ",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)));
      }
    }
    return result;
  }

 private:
  std::vector<pid_t> pids_;
};

}  // namespace

int RunGenerate(int argc, char** argv) {
  FlagParser parser("generate", "one-shot local generation on this machine's CPU");
  GenerateOptions o;
  std::string prompt, prompt_ids;
  int threads = 0;
  bool json = false;
  parser.AddString("model", &o.model_dir, "checkpoint directory (config.json + *.safetensors)");
  parser.AddString("prompt", &prompt, "prompt text (needs the tokenizer; not linked yet)");
  parser.AddString("prompt-ids", &prompt_ids, "comma-separated prompt token ids");
  parser.AddInt("max-tokens", &o.max_tokens, "tokens to generate at most");
  parser.AddFloat("temperature", &o.temperature, "sampling temperature (0 = greedy)");
  parser.AddFloat("top-p", &o.top_p, "nucleus sampling threshold");
  parser.AddInt("top-k", &o.top_k, "top-k sampling (0 = off)");
  parser.AddInt("seed", &o.seed, "sampling seed (< 0: unseeded)");
  parser.AddInt("threads", &threads, "kernel threads (0 = default)");
  std::string weights = "copy";
  parser.AddString("weights", &weights, kWeightResidencyHelp);
  std::string activation_dtype;
  parser.AddString("activation-dtype", &activation_dtype, kActivationDTypeHelp);
  parser.AddBool("json", &json, "print one JSON object");
  parser.AddString("dump-logits", &o.dump_logits, "write logits [steps, vocab] f32 to this .npy");
  parser.AddInt("block-size", &o.block_size, "KV cache block size in tokens");
  parser.AddInt("kv-cache-tokens", &o.kv_cache_tokens, "KV cache capacity (0 = what is needed)");
  parser.AddInt("max-batch-tokens", &o.max_batch_tokens, "prefill chunk bound per step");
  int rank = -1;
  std::string rendezvous;
  float comm_timeout_s = 30;
  parser.AddInt("tp", &o.tp, "tensor-parallel ranks (processes started on this machine)");
  parser.AddInt("ep", &o.ep, "expert-parallel ranks per stage (1, --tp, or --tp * --dp)");
  parser.AddInt("dp", &o.dp, "data-parallel attention ranks (needs --ep = --tp * --dp)");
  parser.AddInt("pp", &o.pp, "pipeline stages (each stage its own tp / ep / dp ranks)");
  parser.AddFloat("comm-timeout", &comm_timeout_s, "seconds before a collective fails");
  parser.AddInt("rank", &rank, "(internal) this process's rank in a sharded run");
  parser.AddString("rendezvous", &rendezvous, "(internal) rendezvous directory of the ranks");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (o.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
    ASSIGN_OR_RETURN(o.weights, ParseWeightResidency(weights));
    RETURN_IF_ERROR(ApplyActivationDTypeFlag(activation_dtype, "--activation-dtype"));
    if (!prompt.empty() && !prompt_ids.empty()) {
      return absl::InvalidArgumentError("give either --prompt or --prompt-ids, not both");
    }
    if (!prompt.empty()) {
      return absl::UnimplementedError(
          "--prompt needs the text layer (tokenizers), which generate does not link yet; "
          "pass token ids with --prompt-ids");
    }
    if (prompt_ids.empty()) return absl::InvalidArgumentError("--prompt-ids is required");
    ASSIGN_OR_RETURN(o.prompt_ids, ParseIds(prompt_ids));
    if (threads > 0) ThreadPool::SetDefaultThreads(threads);
    o.progress = isatty(STDERR_FILENO) != 0;
    if (o.tp < 1 || o.ep < 1 || o.dp < 1 || o.pp < 1) {
      return absl::InvalidArgumentError("--tp, --ep, --dp and --pp must be >= 1");
    }
    // Refused before anything is started or loaded, with the reason.
    absl::Status layout = Shard::CheckLayout(o.tp, o.ep, o.dp, o.pp);
    if (!layout.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--tp ", o.tp, " --ep ", o.ep, " --dp ",
                                                     o.dp, " --pp ", o.pp, ": ",
                                                     layout.message()));
    }
    const int world = GenerateWorldSize(o.tp, o.ep, o.dp, o.pp);
    RankProcesses ranks;
    std::unique_ptr<GlooCommunicator> comm;
    std::string owned_dir;
    if (world > 1) {
      const bool launcher = rank < 0;
      if (launcher) {
        rank = 0;
        owned_dir = (std::filesystem::temp_directory_path() /
                     absl::StrCat("tessera-generate-", getpid()))
                        .string();
        std::filesystem::remove_all(owned_dir);
        rendezvous = owned_dir;
        RETURN_IF_ERROR(ranks.Spawn(argc, argv, world, owned_dir));
      } else {
        o.progress = false;
        if (rendezvous.empty() || rank >= world) {
          return absl::InvalidArgumentError("--rank needs --rendezvous and rank < world size");
        }
      }
      ASSIGN_OR_RETURN(std::unique_ptr<FileKvStore> store, FileKvStore::Open(rendezvous));
      GlooCommOptions co;
      co.store = std::move(store);
      co.rank = rank;
      co.size = world;
      co.name = "generate";
      co.timeout = absl::Seconds(comm_timeout_s);
      ASSIGN_OR_RETURN(comm, GlooCommunicator::Create(co));
      o.rank = rank;
      o.comm = comm.get();
    }
    absl::StatusOr<GenerateResult> result = Generate(o);
    if (world > 1 && o.rank == 0) {
      // Rank 0 failing kills the others (destructor); otherwise wait for them to finish.
      if (result.ok()) RETURN_IF_ERROR(ranks.Wait(absl::Seconds(comm_timeout_s + 30)));
      comm.reset();
      std::error_code ec;
      std::filesystem::remove_all(owned_dir, ec);
    }
    if (!result.ok()) return result.status();
    if (o.rank != 0) return absl::OkStatus();
    GenerateResult& r = *result;
    if (json) {
      nlohmann::json j;
      j["prompt_ids"] = r.prompt_ids;
      j["output_ids"] = r.output_ids;
      j["text"] = nullptr;
      j["finish_reason"] = r.finish_reason;
      j["rank_weight_bytes"] = r.rank_weight_bytes;
      const double comm_s = TotalCommNanos(r.decode_comm) * 1e-9;
      j["timings"] = {{"load_s", r.load_s},
                      {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                      {"decode_tokens_per_s", r.decode_tokens_per_s},
                      {"decode_steps", r.decode_steps},
                      {"decode_s", r.decode_s},
                      {"decode_comm_s", comm_s},
                      {"decode_comm_share", r.decode_s > 0 ? comm_s / r.decode_s : 0.0}};
      nlohmann::json comm = nlohmann::json::object();
      for (size_t i = 0; i < r.decode_comm.size(); ++i) {
        const CommOpStats& c = r.decode_comm[i];
        if (c.calls == 0) continue;
        comm[CommOpName(static_cast<CommOp>(i))] = {
            {"calls", c.calls}, {"seconds", c.nanos * 1e-9}, {"bytes", c.bytes}};
      }
      j["decode_comm"] = comm;
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::string line;
      for (size_t i = 0; i < r.output_ids.size(); ++i) {
        absl::StrAppend(&line, i ? " " : "", r.output_ids[i]);
      }
      std::printf("%s\n", line.c_str());
    }
    return absl::OkStatus();
  });
}

}  // namespace tessera
