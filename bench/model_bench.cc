// Model step benchmark: single-sequence decode and prompt prefill on the CPU worker.
//
// Prints decode tokens/s as a fraction of the memory roofline measured in the same run
// (read bandwidth / weight bytes read per decoded token), prefill tokens/s, and peak resident
// memory against weight bytes + KV cache bytes. Run on the `bench` preset:
//   tessera make-model --arch qwen3_moe --preset bench --out /tmp/bench-model
//   build/bench/model_bench --model /tmp/bench-model --threads 2
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "bench/machine_limits.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/ops.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/model_runner.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Peak resident set size of this process in bytes (VmHWM).
uint64_t PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

struct WeightBytes {
  uint64_t total = 0;            // every tensor in the checkpoint
  uint64_t read_per_token = 0;   // what one decoded token streams from memory
  uint64_t dense = 0;            // read_per_token without the routed experts
  uint64_t experts = 0;          // all routed experts
  double active_fraction = 1.0;  // top_k / num_experts

  // Bytes one decode step of `batch` sequences streams, with routing spread uniformly (the
  // expected number of distinct experts a layer's `batch` tokens select).
  uint64_t ReadPerStep(int batch) const {
    const double untouched = std::pow(1.0 - active_fraction, batch);
    return dense + static_cast<uint64_t>(experts * (1.0 - untouched));
  }
};

// Weights one decode token reads: everything but the embedding table (one row) and the routed
// experts that are not selected (top_k of num_experts are, on average).
WeightBytes CountWeightBytes(const Checkpoint& ckpt, const ModelConfig& config) {
  WeightBytes w;
  uint64_t expert_bytes = 0, embed_bytes = 0;
  for (const std::string& name : ckpt.TensorNames()) {
    const TensorInfo* info = *ckpt.Info(name);
    const uint64_t bytes = info->data_end - info->data_begin;
    w.total += bytes;
    if (absl::StrContains(name, "embed_tokens")) {
      embed_bytes += bytes;
    } else if (absl::StrContains(name, ".experts.") || absl::StrContains(name, ".experts_")) {
      expert_bytes += bytes;
    }
  }
  const double active_fraction =
      config.num_experts > 0 ? double(config.num_experts_per_tok) / config.num_experts : 1.0;
  w.dense = w.total - embed_bytes - expert_bytes;
  if (config.tie_word_embeddings) w.dense += embed_bytes;  // lm_head reads the table
  w.experts = expert_bytes;
  w.active_fraction = active_fraction;
  w.read_per_token = w.ReadPerStep(1);
  return w;
}

absl::Status Run(const std::string& model_dir, int threads, int prompt_tokens,
                 int decode_tokens, WeightResidency residency, int batch) {
  ThreadPool::SetDefaultThreads(threads);
  std::printf("measuring read bandwidth with %d threads...\n", threads);
  // The limit is measured before and after the timed work and the larger value kept, so a slow
  // moment of a shared machine cannot flatter the ratio (as linear_bench does).
  const double bandwidth_before = bench::MeasureReadBandwidth(threads);

  const double t_load = Now();
  ModelLoadOptions load;
  load.weights = residency;
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelFromDirectory(model_dir, load));
  std::printf("loaded %s in %.1f s (weights: %s)\n", model_dir.c_str(), Now() - t_load,
              residency == WeightResidency::kCopied ? "copied into huge-page memory"
                                                  : "mmap'ed in place");
  const WeightBytes weights = CountWeightBytes(*loaded.checkpoint, *loaded.config);
  const int64_t vocab = loaded.model->vocab_size();

  ModelRunnerOptions options;
  options.block_size = 16;
  // Room for the batch-1 sequence and `batch` more of kBatchPrompt tokens each.
  constexpr int kBatchPrompt = 16;
  options.num_blocks = (prompt_tokens + decode_tokens + 2) / options.block_size + 2;
  if (batch > 1) {
    options.num_blocks +=
        batch * ((kBatchPrompt + decode_tokens + 2) / options.block_size + 2);
  }
  // Large enough for the batch-1 prompt and for every batched prompt in one step.
  options.max_tokens_per_step = std::max(prompt_tokens, batch * kBatchPrompt);
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   ModelRunner::Create(std::move(loaded.model), options));
  const uint64_t kv_bytes = static_cast<uint64_t>(runner->kv_cache().nbytes());

  std::mt19937 rng(1);
  std::vector<int32_t> prompt(prompt_tokens);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  RETURN_IF_ERROR(runner->AddSequence(1, prompt, greedy));

  // Prefill: one step of prompt_tokens tokens, producing the first output token.
  const double t0 = Now();
  ASSIGN_OR_RETURN(std::vector<StepOutput> first, runner->Step());
  const double prefill_s = Now() - t0;
  if (first.size() != 1) return absl::InternalError("prefill did not produce a token");

  // Decode: warm up one token, then time the rest.
  RETURN_IF_ERROR(runner->Step().status());
  const double t1 = Now();
  for (int i = 0; i < decode_tokens; ++i) RETURN_IF_ERROR(runner->Step().status());
  const double decode_s = Now() - t1;

  // Batched decode: `batch` sequences decoding together (what a server does with concurrent
  // requests); prompts are prefilled first, then decode_tokens steps of `batch` tokens are timed.
  double batch_tps = 0.0;
  if (batch > 1) {
    RETURN_IF_ERROR(runner->RemoveSequence(1));
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t> p(kBatchPrompt);
      for (int32_t& t : p) t = static_cast<int32_t>(rng() % vocab);
      RETURN_IF_ERROR(runner->AddSequence(100 + b, p, greedy));
    }
    // Prefill every prompt, then one warm-up step that decodes all `batch` sequences.
    do {
      RETURN_IF_ERROR(runner->Step().status());
    } while (runner->last_prefill_tokens() > 0);
    if (runner->last_decode_tokens() != batch) {
      return absl::InternalError(absl::StrCat("batched warm-up step decoded ",
                                              runner->last_decode_tokens(), " tokens, expected ",
                                              batch));
    }
    const double t2 = Now();
    int64_t produced = 0;
    for (int i = 0; i < decode_tokens; ++i) {
      ASSIGN_OR_RETURN(std::vector<StepOutput> out, runner->Step());
      if (runner->last_prefill_tokens() != 0 || runner->last_decode_tokens() != batch) {
        return absl::InternalError("a timed batched step was not a pure decode step");
      }
      produced += static_cast<int64_t>(out.size());
    }
    batch_tps = produced / (Now() - t2);
  }

  const uint64_t peak_rss = PeakRssBytes();  // before the second probe's 1 GiB buffer
  const double bandwidth = std::max(bandwidth_before, bench::MeasureReadBandwidth(threads));
  std::printf("read bandwidth: %.2f GB/s (best of before %.2f and after the run)\n",
              bandwidth / 1e9, bandwidth_before / 1e9);
  const double decode_tps = decode_tokens / decode_s;
  const double roofline_tps = bandwidth / static_cast<double>(weights.read_per_token);
  const double prefill_tps = prompt_tokens / prefill_s;
  const bool bf16_act = GetActivationDType() == ActivationDType::kBF16 && Bf16ActivationsSupported();
  std::printf("activations: %s into bf16-weight matmuls (--activation-dtype)\n",
              bf16_act ? "bf16" : "f32");
  std::printf("weights: %.3f GB total, %.3f GB read per decoded token\n", weights.total / 1e9,
              weights.read_per_token / 1e9);
  std::printf("decode  : %.2f tokens/s (batch 1, %d tokens) = %.1f%% of the roofline %.2f tokens/s"
              "\n",
              decode_tps, decode_tokens, 100.0 * decode_tps / roofline_tps, roofline_tps);
  std::printf("prefill : %.2f tokens/s (%d-token prompt)\n", prefill_tps, prompt_tokens);
  if (batch > 1) {
    const double batch_roofline = batch * bandwidth / static_cast<double>(weights.ReadPerStep(batch));
    std::printf("decode  : %.2f tokens/s aggregate (batch %d, %.3f GB read per step with uniform "
                "routing) = %.1f%% of the roofline %.2f tokens/s\n",
                batch_tps, batch, weights.ReadPerStep(batch) / 1e9,
                100.0 * batch_tps / batch_roofline, batch_roofline);
  }
  std::printf("memory  : peak RSS %.3f GB = %.3fx (weights %.3f GB + KV cache %.3f GB)\n",
              peak_rss / 1e9, double(peak_rss) / double(weights.total + kv_bytes),
              weights.total / 1e9, kv_bytes / 1e9);
  std::printf("RESULT decode_tps=%.3f roofline_fraction=%.4f prefill_tps=%.3f peak_rss_ratio=%.4f"
              "\n",
              decode_tps, decode_tps / roofline_tps, prefill_tps,
              double(peak_rss) / double(weights.total + kv_bytes));
  if (batch > 1) std::printf("RESULT batch=%d batch_decode_tps=%.3f\n", batch, batch_tps);
  return absl::OkStatus();
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  std::string model;
  int threads = 2, prompt_tokens = 512, decode_tokens = 32;
  tessera::FlagParser flags("model_bench", "Decode and prefill speed of one model on the CPU.");
  flags.AddString("model", &model, "checkpoint directory (tessera make-model output)");
  flags.AddInt("threads", &threads, "worker threads");
  flags.AddInt("prompt-tokens", &prompt_tokens, "prefill prompt length");
  flags.AddInt("decode-tokens", &decode_tokens, "decoded tokens timed");
  std::string weights = "copy";
  flags.AddString("weights", &weights, tessera::kWeightResidencyHelp);
  std::string activation_dtype;
  flags.AddString("activation-dtype", &activation_dtype, tessera::kActivationDTypeHelp);
  int batch = 1;
  flags.AddInt("batch", &batch, "also time decode of this many sequences together (> 1)");
  return tessera::RunCommand(flags, argc, argv, [&]() -> absl::Status {
    if (model.empty()) return absl::InvalidArgumentError("--model is required");
    ASSIGN_OR_RETURN(tessera::WeightResidency residency, tessera::ParseWeightResidency(weights));
    RETURN_IF_ERROR(tessera::ApplyActivationDTypeFlag(activation_dtype, "--activation-dtype"));
    if (batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");
    return tessera::Run(model, threads, prompt_tokens, decode_tokens, residency, batch);
  });
}
