// LlmEngine driving a real tiny model through StepRunner: outputs equal ModelRunner's (the
// worker's reference loop) for the same prompts — alone, batched, under preemption (tiny KV) and
// with prefix-cache hits — for greedy and seeded sampling.
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/engine/llm_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "tests/coordinator/engine_test_util.h"
#include "tests/test_util.h"
#include "worker/make_model.h"
#include "worker/model_runner.h"
#include "worker/step_runner.h"

namespace tessera {
namespace {

using testing::Collector;

constexpr int kBlock = 4;

const std::string& TinyModelDir() { return testing::TinyModelDir("qwen3_moe"); }

struct Prompt {
  std::vector<int32_t> ids;
  float temperature = 0;  // 0: greedy
  uint64_t seed = 1;
};

// ModelRunner's outputs for the prompts, `max_tokens` each.
std::vector<std::vector<int32_t>> Reference(const std::vector<Prompt>& prompts, int max_tokens) {
  auto loaded = LoadModelFromDirectory(TinyModelDir());
  CHECK(loaded.ok()) << loaded.status();
  ModelRunnerOptions o;
  o.block_size = kBlock;
  o.num_blocks = 512;
  auto runner = ModelRunner::Create(std::move(loaded->model), o);
  CHECK(runner.ok()) << runner.status();
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingParams p;
    p.temperature = prompts[i].temperature;
    p.top_k = prompts[i].temperature > 0 ? 20 : 0;
    p.seed = prompts[i].seed;
    CHECK((*runner)->AddSequence(static_cast<int64_t>(i), prompts[i].ids, p).ok());
  }
  for (int step = 0; step < 10000; ++step) {
    auto outs = (*runner)->Step();
    CHECK(outs.ok()) << outs.status();
    for (const StepOutput& s : *outs) out[s.seq_id].push_back(s.token);
    bool live = false;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if ((*runner)->HasSequence(i) && static_cast<int>(out[i].size()) >= max_tokens) {
        CHECK((*runner)->RemoveSequence(i).ok());
      }
      live = live || (*runner)->HasSequence(i);
    }
    if (!live) break;
  }
  return out;
}

struct EngineRun {
  std::vector<std::vector<int32_t>> outputs;
  std::vector<int64_t> cached_prompt_tokens;
  int64_t preemptions = 0;
};

// Runs the prompts through LlmEngine + StepRunner. `sequential`: one at a time (each waits for
// the previous), else all submitted at once.
EngineRun RunEngine(const std::vector<Prompt>& prompts, int max_tokens, int num_blocks,
                    bool sequential, bool prefix_caching = true, int budget = 2048) {
  auto loaded = LoadModelFromDirectory(TinyModelDir());
  CHECK(loaded.ok()) << loaded.status();
  const int32_t vocab = static_cast<int32_t>(loaded->model->vocab_size());
  StepRunnerOptions so;
  so.num_blocks = num_blocks;
  so.block_size = kBlock;
  auto runner = StepRunner::Create(std::move(*loaded), so);
  CHECK(runner.ok()) << runner.status();
  LlmEngineOptions eo;
  eo.model_name = "tiny";
  eo.vocab_size = vocab;
  eo.max_model_len = 4096;
  eo.enable_prefix_caching = prefix_caching;
  eo.max_num_batched_tokens = budget;
  auto engine = LlmEngine::Create(runner->get(), eo);
  CHECK(engine.ok()) << engine.status();
  Collector collector;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest r;
    r.request_id = absl::StrCat("p", i);
    r.prompt_ids = prompts[i].ids;
    r.sampling.temperature = prompts[i].temperature;
    r.sampling.top_k = prompts[i].temperature > 0 ? 20 : 0;
    r.sampling.seed = prompts[i].seed;
    r.sampling.max_tokens = max_tokens;
    EXPECT_TRUE((*engine)->Submit(r, collector.For(r.request_id)).ok());
    if (sequential) EXPECT_TRUE(collector.WaitFinished(r.request_id, 60));
  }
  EXPECT_TRUE((*engine)->WaitIdle(120));
  EngineRun run;
  for (size_t i = 0; i < prompts.size(); ++i) {
    testing::Stream s = collector.Get(absl::StrCat("p", i));
    EXPECT_TRUE(s.finished && s.status.ok()) << s.status;
    run.outputs.push_back(s.tokens);
    run.cached_prompt_tokens.push_back(s.usage.cached_prompt_tokens);
  }
  run.preemptions = (*engine)->stats().num_preemptions;
  return run;
}

std::vector<Prompt> MakePrompts(int n, uint64_t seed, bool shared_prefix, float temperature) {
  std::mt19937_64 rng(seed);
  auto loaded_vocab = [] {
    static int64_t vocab = [] {
      auto loaded = LoadModelFromDirectory(TinyModelDir());
      CHECK(loaded.ok()) << loaded.status();
      return loaded->model->vocab_size();
    }();
    return vocab;
  }();
  std::vector<int32_t> prefix;
  for (int i = 0; i < 13; ++i) prefix.push_back(static_cast<int32_t>(rng() % loaded_vocab));
  std::vector<Prompt> prompts;
  for (int i = 0; i < n; ++i) {
    Prompt p;
    if (shared_prefix) p.ids = prefix;
    int extra = 2 + static_cast<int>(rng() % 9);
    for (int k = 0; k < extra; ++k) p.ids.push_back(static_cast<int32_t>(rng() % loaded_vocab));
    p.temperature = temperature;
    p.seed = 100 + i;
    prompts.push_back(p);
  }
  return prompts;
}

TEST(EngineModel, GreedyAloneMatchesModelRunner) {
  std::vector<Prompt> prompts = MakePrompts(3, 1, false, 0);
  std::vector<std::vector<int32_t>> want = Reference(prompts, 8);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRun got = RunEngine({prompts[i]}, 8, 64, true);
    EXPECT_EQ(got.outputs[0], want[i]) << "prompt " << i;
  }
}

TEST(EngineModel, GreedyBatchedMatchesModelRunner) {
  std::vector<Prompt> prompts = MakePrompts(6, 2, false, 0);
  EngineRun got = RunEngine(prompts, 8, 128, false);
  EXPECT_EQ(got.outputs, Reference(prompts, 8));
}

TEST(EngineModel, SeededSamplingWithPreemptionMatchesModelRunner) {
  std::vector<Prompt> prompts = MakePrompts(6, 3, false, 0.9f);
  // 14 blocks of 4 = 56 slots for 6 requests of up to 10 + 10 tokens: forces preemption.
  EngineRun got = RunEngine(prompts, 10, 14, false, true, 16);
  EXPECT_GT(got.preemptions, 0);
  EXPECT_EQ(got.outputs, Reference(prompts, 10));
}

TEST(EngineModel, PrefixCacheHitsKeepOutputsIdentical) {
  std::vector<Prompt> prompts = MakePrompts(4, 4, true, 0);
  EngineRun got = RunEngine(prompts, 6, 64, true);
  EXPECT_EQ(got.outputs, Reference(prompts, 6));
  EXPECT_EQ(got.cached_prompt_tokens[0], 0);
  for (size_t i = 1; i < prompts.size(); ++i) EXPECT_EQ(got.cached_prompt_tokens[i], 12);
  EngineRun off = RunEngine(prompts, 6, 64, true, false);
  EXPECT_EQ(off.outputs, got.outputs);
  EXPECT_EQ(off.cached_prompt_tokens[1], 0);
}

}  // namespace
}  // namespace tessera
