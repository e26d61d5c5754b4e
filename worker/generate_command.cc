#include "worker/generate_command.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/base/flags.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/model_config.h"
#include "worker/model_runner.h"
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

absl::StatusOr<GenerateResult> Generate(const GenerateOptions& options) {
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError("--max-tokens must be >= 1");
  }
  if (options.block_size < 1) return absl::InvalidArgumentError("--block-size must be >= 1");
  GenerateResult result;
  result.prompt_ids = options.prompt_ids;
  const auto t0 = Clock::now();
  ModelLoadOptions load;
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
  RETURN_IF_ERROR(runner->AddSequence(0, options.prompt_ids, sp));

  std::vector<float> dumped;
  int64_t vocab = runner->model().vocab_size();
  int64_t prefill_tokens = 0, decode_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  result.finish_reason = "length";
  bool done = false;
  while (!done) {
    const auto s0 = Clock::now();
    ASSIGN_OR_RETURN(std::vector<StepOutput> outs, runner->Step());
    const double dt = Seconds(s0, Clock::now());
    if (runner->last_prefill_tokens() > 0) {
      prefill_tokens += runner->last_prefill_tokens();
      prefill_s += dt;
    } else {
      decode_tokens += runner->last_decode_tokens();
      decode_s += dt;
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
  result.prefill_tokens_per_s = prefill_s > 0 ? prefill_tokens / prefill_s : 0;
  result.decode_tokens_per_s = decode_s > 0 ? decode_tokens / decode_s : 0;
  if (!options.dump_logits.empty()) {
    const int64_t steps = static_cast<int64_t>(result.output_ids.size());
    Tensor t = Tensor::FromVector(absl::MakeConstSpan(dumped), {steps, vocab});
    RETURN_IF_ERROR(WriteNpy(options.dump_logits, t));
  }
  return result;
}

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
  parser.AddBool("json", &json, "print one JSON object");
  parser.AddString("dump-logits", &o.dump_logits, "write logits [steps, vocab] f32 to this .npy");
  parser.AddInt("block-size", &o.block_size, "KV cache block size in tokens");
  parser.AddInt("kv-cache-tokens", &o.kv_cache_tokens, "KV cache capacity (0 = what is needed)");
  parser.AddInt("max-batch-tokens", &o.max_batch_tokens, "prefill chunk bound per step");
  return RunCommand(parser, argc, argv, [&]() -> absl::Status {
    if (o.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
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
    ASSIGN_OR_RETURN(GenerateResult r, Generate(o));
    if (json) {
      nlohmann::json j;
      j["prompt_ids"] = r.prompt_ids;
      j["output_ids"] = r.output_ids;
      j["text"] = nullptr;
      j["finish_reason"] = r.finish_reason;
      j["timings"] = {{"load_s", r.load_s},
                      {"prefill_tokens_per_s", r.prefill_tokens_per_s},
                      {"decode_tokens_per_s", r.decode_tokens_per_s}};
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
