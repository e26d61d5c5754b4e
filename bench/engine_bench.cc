// engine_bench: the coordinator engine's own cost per step (scheduling, block management, prefix
// cache, plan building, output processing, callbacks) with an executor that does no model work,
// for N concurrent decoding requests. The limit it is compared to is the model step it must hide
// behind: at 1 ms per decode step (a fast GPU step), the engine's share is overhead / 1 ms.
//
// Usage: engine_bench [--requests N] [--prompt P] [--tokens T] [--block B]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/engine/llm_engine.h"

namespace tessera {
namespace {

// Worker-side bookkeeping only: context length and computed count per sequence.
class NullExecutor : public StepExecutor {
 public:
  NullExecutor(int num_blocks, int block_size) : cap_{num_blocks, block_size} {}
  KvCapacity capacity() const override { return cap_; }
  absl::StatusOr<v1::StepResult> Execute(const v1::StepPlan& plan) override {
    for (uint64_t id : plan.finished_seq_ids()) seqs_.erase(id);
    v1::StepResult result;
    result.set_step_id(plan.step_id());
    auto run = [&](uint64_t id, Seq& s, int scheduled) {
      s.computed += scheduled;
      if (s.computed == s.len) {
        v1::SampledToken* t = result.add_sampled();
        t->set_seq_id(id);
        t->set_token_id(static_cast<int32_t>((id * 7919 + s.len) % 30000) + 1000);
      }
    };
    for (const v1::NewSeq& n : plan.new_seqs()) {
      Seq& s = seqs_[n.seq_id()];
      s.len = n.token_ids_size();
      s.computed = n.num_computed_tokens();
      run(n.seq_id(), s, n.num_scheduled_tokens());
    }
    for (const v1::CachedSeq& c : plan.cached_seqs()) {
      Seq& s = seqs_[c.seq_id()];
      s.len += c.append_token_ids_size();
      run(c.seq_id(), s, c.num_scheduled_tokens());
    }
    ++steps_;
    return result;
  }
  int64_t steps() const { return steps_; }

 private:
  struct Seq {
    int64_t len = 0;
    int64_t computed = 0;
  };
  KvCapacity cap_;
  std::unordered_map<uint64_t, Seq> seqs_;
  int64_t steps_ = 0;
};

int Main(int argc, char** argv) {
  int requests = 256, prompt = 512, tokens = 256, block = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    int v = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--requests")) requests = v;
    if (!std::strcmp(argv[i], "--prompt")) prompt = v;
    if (!std::strcmp(argv[i], "--tokens")) tokens = v;
    if (!std::strcmp(argv[i], "--block")) block = v;
  }
  const int blocks = requests * ((prompt + tokens) / block + 2);
  NullExecutor executor(blocks, block);
  LlmEngineOptions o;
  o.model_name = "bench";
  o.vocab_size = 32000;
  o.max_model_len = prompt + tokens + 1;
  o.max_num_batched_tokens = 8192;
  o.max_num_seqs = requests;
  auto engine = LlmEngine::Create(&executor, o);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < requests; ++r) {
    GenerateRequest req;
    req.request_id = "r" + std::to_string(r);
    // Half the prompt is a shared system prompt (prefix-cache hits), half is per request.
    for (int i = 0; i < prompt; ++i) {
      req.prompt_ids.push_back(i < prompt / 2 ? i % 32000 : (r * 131 + i) % 32000);
    }
    req.sampling.max_tokens = tokens;
    req.sampling.ignore_eos = true;
    auto status = (*engine)->Submit(req, [](GenerateOutput) {});
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      return 1;
    }
  }
  (*engine)->WaitIdle(600);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t steps = (*engine)->stats().num_steps;
  const double generated = static_cast<double>(requests) * tokens;
  std::printf("engine_bench: %d requests x (%d prompt + %d output tokens), block %d\n", requests,
              prompt, tokens, block);
  std::printf("  %lld steps in %.3f s: %.1f us per step, %.2f us per generated token\n",
              static_cast<long long>(steps), seconds, 1e6 * seconds / steps,
              1e6 * seconds / generated);
  std::printf("  engine share of a 1 ms model step: %.1f%%\n", 100.0 * (seconds / steps) / 1e-3);
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
