// LlmEngine + Scheduler + KvBlockManager driven through FakeStepExecutor: outputs must not depend
// on batching, chunking, preemption or prefix caching, and every plan must keep the protocol.
#include <memory>
#include <regex>
#include <sstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/engine/llm_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/coordinator/engine_test_util.h"
#include "tests/coordinator/fake_step_executor.h"

namespace tessera {
namespace {

using ::testing::IsEmpty;
using testing::Collector;
using testing::FakeStepExecutor;
using testing::HashModel;
using testing::ReferenceOutput;
using testing::Stream;

constexpr int32_t kVocab = 5000;

struct EngineSetup {
  int num_blocks = 256;
  int block_size = 4;
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  bool prefix_caching = true;
  int64_t max_model_len = 4096;
};

struct Harness {
  explicit Harness(const EngineSetup& setup)
      : executor(setup.num_blocks, setup.block_size, HashModel(kVocab),
                 setup.max_num_batched_tokens, setup.max_num_seqs) {
    LlmEngineOptions options;
    options.model_name = "fake";
    options.vocab_size = kVocab;
    options.max_model_len = setup.max_model_len;
    options.max_num_batched_tokens = setup.max_num_batched_tokens;
    options.max_num_seqs = setup.max_num_seqs;
    options.enable_prefix_caching = setup.prefix_caching;
    auto created = LlmEngine::Create(&executor, options);
    EXPECT_TRUE(created.ok()) << created.status();
    engine = *std::move(created);
  }
  FakeStepExecutor executor;
  std::unique_ptr<LlmEngine> engine;
  Collector collector;
};

struct Job {
  std::string id;
  std::vector<int32_t> prompt;
  uint64_t seed;
  int max_tokens;
};

// 64 requests: random lengths 1..120, half of them sharing one of three prefixes.
std::vector<Job> MakeJobs(int n, int seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> prefixes(3);
  for (auto& p : prefixes) {
    for (int i = 0; i < 37; ++i) p.push_back(static_cast<int32_t>(rng() % kVocab));
  }
  std::vector<Job> jobs;
  for (int i = 0; i < n; ++i) {
    Job j;
    j.id = absl::StrCat("r", i);
    if (i % 2 == 0) j.prompt = prefixes[i % 3];
    int extra = 1 + static_cast<int>(rng() % 80);
    for (int k = 0; k < extra; ++k) j.prompt.push_back(static_cast<int32_t>(rng() % kVocab));
    j.seed = rng();
    j.max_tokens = 1 + static_cast<int>(rng() % 24);
    jobs.push_back(j);
  }
  return jobs;
}

GenerateRequest ToRequest(const Job& j) {
  GenerateRequest r;
  r.request_id = j.id;
  r.prompt_ids = j.prompt;
  r.sampling.seed = j.seed;
  r.sampling.max_tokens = j.max_tokens;
  return r;
}

// Submits all jobs at once, waits, and checks outputs against the reference model.
void RunAndCheck(Harness& h, const std::vector<Job>& jobs) {
  for (const Job& j : jobs) {
    ASSERT_TRUE(h.engine->Submit(ToRequest(j), h.collector.For(j.id)).ok());
  }
  ASSERT_TRUE(h.engine->WaitIdle(60));
  for (const Job& j : jobs) {
    Stream s = h.collector.Get(j.id);
    ASSERT_TRUE(s.finished) << j.id;
    EXPECT_TRUE(s.status.ok()) << s.status;
    EXPECT_EQ(s.tokens, ReferenceOutput(HashModel(kVocab), j.prompt, j.seed, j.max_tokens))
        << j.id;
    EXPECT_EQ(s.finish_reason, FinishReason::kLength);
    EXPECT_EQ(s.outputs_after_finish, 0);
    EXPECT_EQ(s.usage.prompt_tokens, static_cast<int64_t>(j.prompt.size()));
    EXPECT_EQ(s.usage.completion_tokens, j.max_tokens);
  }
  EXPECT_THAT(h.executor.violations(), IsEmpty());
}

TEST(EngineScheduling, SingleRequestMatchesReference) {
  Harness h(EngineSetup{});
  RunAndCheck(h, {Job{"only", {1, 2, 3, 4, 5, 6, 7}, 42, 20}});
}

TEST(EngineScheduling, SixtyFourConcurrentMatchAlone) {
  Harness h(EngineSetup{});
  RunAndCheck(h, MakeJobs(64, 1));
  EXPECT_GT(h.executor.max_live_seqs(), 8);  // they really ran batched
}

TEST(EngineScheduling, TinyKvCachePreemptsAndStillMatches) {
  EngineSetup setup;
  setup.num_blocks = 40;  // 160 token slots for 64 requests of up to ~140 tokens
  setup.max_model_len = 160;
  Harness h(setup);
  RunAndCheck(h, MakeJobs(64, 2));
  EXPECT_GT(h.engine->stats().num_preemptions, 0);
  EXPECT_EQ(h.engine->stats().num_free_blocks, 40);
}

TEST(EngineScheduling, TinyKvWithoutPrefixCachingMatches) {
  EngineSetup setup;
  setup.num_blocks = 40;
  setup.max_model_len = 160;
  setup.prefix_caching = false;
  Harness h(setup);
  RunAndCheck(h, MakeJobs(32, 3));
  EXPECT_GT(h.engine->stats().num_preemptions, 0);
}

class ChunkBudget : public ::testing::TestWithParam<int> {};

TEST_P(ChunkBudget, OutputsIndependentOfBudget) {
  EngineSetup setup;
  setup.max_num_batched_tokens = GetParam();
  Harness h(setup);
  RunAndCheck(h, MakeJobs(12, 4));
}

INSTANTIATE_TEST_SUITE_P(Budgets, ChunkBudget, ::testing::Values(1, 2, 3, 7, 16, 64, 2048));

TEST(EngineScheduling, MaxNumSeqsCapsTheBatch) {
  EngineSetup setup;
  setup.max_num_seqs = 5;
  Harness h(setup);
  RunAndCheck(h, MakeJobs(20, 5));
  EXPECT_LE(h.executor.max_live_seqs(), 5);
}

TEST(EngineScheduling, PrefixCacheHitsAreCountedAndReused) {
  Harness h(EngineSetup{});
  std::vector<int32_t> shared;
  for (int i = 0; i < 40; ++i) shared.push_back(100 + i);
  Job first{"first", shared, 7, 4};
  first.prompt.push_back(1);
  RunAndCheck(h, {first});
  Job second{"second", shared, 8, 4};
  second.prompt.push_back(2);
  RunAndCheck(h, {second});
  Stream s = h.collector.Get("second");
  EXPECT_EQ(s.usage.cached_prompt_tokens, 40);  // 10 full blocks of 4
  EXPECT_EQ(h.collector.Get("first").usage.cached_prompt_tokens, 0);
  std::string text = h.engine->metrics().Render();
  const std::string labels = "{model_name=\"fake\",engine=\"0\"}";
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:prefix_cache_hits_total" + labels + " 40"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:prefix_cache_queries_total" + labels + " 82"));
}

TEST(EngineScheduling, PrefixHitNeverCoversTheLastPromptToken) {
  Harness h(EngineSetup{});
  std::vector<int32_t> prompt;
  for (int i = 0; i < 16; ++i) prompt.push_back(200 + i);  // exactly 4 full blocks
  RunAndCheck(h, {Job{"a", prompt, 1, 3}});
  RunAndCheck(h, {Job{"b", prompt, 2, 3}});
  EXPECT_EQ(h.collector.Get("b").usage.cached_prompt_tokens, 12);
}

TEST(EngineScheduling, PrefixCachingOffHasNoHits) {
  EngineSetup setup;
  setup.prefix_caching = false;
  Harness h(setup);
  std::vector<int32_t> prompt(30, 9);
  RunAndCheck(h, {Job{"a", prompt, 1, 3}});
  RunAndCheck(h, {Job{"b", prompt, 2, 3}});
  EXPECT_EQ(h.collector.Get("b").usage.cached_prompt_tokens, 0);
}

TEST(EngineScheduling, AbortFreesBlocksAndReleasesTheSequence) {
  Harness h(EngineSetup{});
  GenerateRequest r;
  r.request_id = "long";
  r.prompt_ids = {1, 2, 3};
  r.sampling.max_tokens = 1000;
  r.sampling.seed = 1;
  OutputCallback collect = h.collector.For("long");
  int seen = 0;
  // Abort from inside the callback (allowed): takes effect before the next step.
  OutputCallback abort_at_5 = [&](GenerateOutput out) {
    seen += static_cast<int>(out.token_ids.size());
    collect(std::move(out));
    if (seen == 5) h.engine->Abort("long");
  };
  ASSERT_TRUE(h.engine->Submit(r, abort_at_5).ok());
  ASSERT_TRUE(h.collector.WaitFinished("long"));
  Stream s = h.collector.Get("long");
  EXPECT_EQ(s.finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(s.status.ok());
  EXPECT_EQ(s.tokens.size(), 5u);
  EXPECT_EQ(s.usage.completion_tokens, 5);
  ASSERT_TRUE(h.engine->WaitIdle(10));
  EXPECT_EQ(h.engine->stats().num_free_blocks, 256);
  EXPECT_TRUE(testing::PollUntil([&] { return h.executor.num_live_seqs() == 0; }));
  EXPECT_THAT(h.executor.violations(), IsEmpty());
}

TEST(EngineScheduling, AbortOfUnknownIdIsIgnored) {
  Harness h(EngineSetup{});
  h.engine->Abort("nobody");
  RunAndCheck(h, {Job{"x", {5, 6}, 3, 4}});
}

TEST(EngineScheduling, StopTokenIdsAndEos) {
  Harness h(EngineSetup{});
  Job j{"s", {11, 12, 13}, 99, 30};
  std::vector<int32_t> ref = ReferenceOutput(HashModel(kVocab), j.prompt, j.seed, j.max_tokens);
  GenerateRequest r = ToRequest(j);
  r.sampling.stop_token_ids = {ref[4]};
  ASSERT_TRUE(h.engine->Submit(r, h.collector.For("s")).ok());
  ASSERT_TRUE(h.collector.WaitFinished("s"));
  Stream s = h.collector.Get("s");
  std::vector<int32_t> expected(ref.begin(), ref.begin() + 5);
  // The stop token may appear earlier in the reference: stop at its first occurrence.
  for (size_t i = 0; i < 5; ++i) {
    if (ref[i] == ref[4]) {
      expected.assign(ref.begin(), ref.begin() + i + 1);
      break;
    }
  }
  EXPECT_EQ(s.tokens, expected);
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
}

TEST(EngineScheduling, EosStopsUnlessIgnored) {
  FakeStepExecutor executor(64, 4, HashModel(kVocab));
  LlmEngineOptions options;
  options.vocab_size = kVocab;
  options.max_model_len = 256;
  std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  std::vector<int32_t> ref = ReferenceOutput(HashModel(kVocab), prompt, 5, 10);
  options.eos_token_ids = {ref[2]};
  auto engine = *LlmEngine::Create(&executor, options);
  Collector c;
  GenerateRequest r;
  r.request_id = "eos";
  r.prompt_ids = prompt;
  r.sampling.seed = 5;
  r.sampling.max_tokens = 10;
  ASSERT_TRUE(engine->Submit(r, c.For("eos")).ok());
  r.request_id = "ignore";
  r.sampling.ignore_eos = true;
  ASSERT_TRUE(engine->Submit(r, c.For("ignore")).ok());
  ASSERT_TRUE(engine->WaitIdle(10));
  EXPECT_EQ(c.Get("eos").finish_reason, FinishReason::kStop);
  EXPECT_LE(c.Get("eos").tokens.size(), 3u);
  EXPECT_EQ(c.Get("ignore").tokens, ref);
  EXPECT_EQ(c.Get("ignore").finish_reason, FinishReason::kLength);
}

TEST(EngineScheduling, LogprobsArePassedThrough) {
  Harness h(EngineSetup{});
  GenerateRequest r = ToRequest(Job{"lp", {7, 8, 9}, 4, 6});
  r.sampling.logprobs = 3;
  ASSERT_TRUE(h.engine->Submit(r, h.collector.For("lp")).ok());
  ASSERT_TRUE(h.collector.WaitFinished("lp"));
  Stream s = h.collector.Get("lp");
  ASSERT_EQ(s.logprobs.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(s.logprobs[i].token_id, s.tokens[i]);
    EXPECT_FLOAT_EQ(s.logprobs[i].logprob, -0.125f * static_cast<float>(s.tokens[i] % 8));
    ASSERT_EQ(s.logprobs[i].top.size(), 3u);
    EXPECT_EQ(s.logprobs[i].top[1].first, s.tokens[i] + 1);
  }
}

TEST(EngineScheduling, ExecutorFailureRequeuesFreshAndFailsStreamed) {
  Harness h(EngineSetup{});
  // Step 1 prefills "early" (and samples its first token); step 3 fails: "early" has streamed,
  // "late" (submitted after it streamed, long prompt chunked? no: not yet sampled) has not.
  h.executor.FailAtStep(3);
  GenerateRequest early = ToRequest(Job{"early", {1, 2, 3}, 1, 50});
  ASSERT_TRUE(h.engine->Submit(early, h.collector.For("early")).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return !h.collector.Get("early").tokens.empty(); }));
  ASSERT_TRUE(testing::PollUntil([&] { return !h.engine->model_info().ready; }));
  Stream e = h.collector.Get("early");
  ASSERT_TRUE(e.finished);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(e.finish_reason, FinishReason::kAbort);
  // Not ready: new requests are refused.
  absl::Status refused = h.engine->Submit(ToRequest(Job{"x", {1}, 1, 1}), h.collector.For("x"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(h.executor.violations(), IsEmpty());
}

TEST(EngineScheduling, RequeuedRequestsCompleteAfterReady) {
  EngineSetup setup;
  setup.max_num_batched_tokens = 8;  // a 40-token prompt takes 5 steps to prefill
  Harness h(setup);
  h.executor.FailAtStep(2);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(i + 1);
  Job j{"fresh", prompt, 3, 5};
  ASSERT_TRUE(h.engine->Submit(ToRequest(j), h.collector.For("fresh")).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return !h.engine->model_info().ready; }));
  EXPECT_FALSE(h.collector.Get("fresh").finished);
  EXPECT_EQ(h.engine->stats().num_waiting, 1);
  h.engine->SetReady(true);
  ASSERT_TRUE(h.collector.WaitFinished("fresh"));
  Stream s = h.collector.Get("fresh");
  EXPECT_TRUE(s.status.ok()) << s.status;
  EXPECT_EQ(s.tokens, ReferenceOutput(HashModel(kVocab), prompt, 3, 5));
  EXPECT_THAT(h.executor.violations(), IsEmpty());
}

TEST(EngineMetrics, ExposeVllmStyleFamiliesThatParse) {
  EngineSetup setup;
  setup.num_blocks = 40;
  setup.max_model_len = 160;
  Harness h(setup);
  std::vector<Job> jobs = MakeJobs(16, 6);
  RunAndCheck(h, jobs);
  int64_t generated = 0;
  int64_t prompt = 0;
  for (const Job& j : jobs) {
    generated += j.max_tokens;
    prompt += static_cast<int64_t>(j.prompt.size());
  }
  const std::string text = h.engine->metrics().Render();
  const std::string label = "{model_name=\"fake\",engine=\"0\"}";
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:generation_tokens_total" + label + " " +
                                         std::to_string(generated) + "\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:prompt_tokens_total" + label + " " +
                                         std::to_string(prompt) + "\n"));
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "tessera:request_success_total{model_name=\"fake\",engine=\"0\","
                        "finished_reason=\"length\"} 16\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:num_requests_running" + label + " 0\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:e2e_request_latency_seconds_count" + label +
                                         " 16\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:time_to_first_token_seconds_count" + label +
                                         " 16\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("tessera:time_per_output_token_seconds_count" + label +
                                         " " + std::to_string(generated - 16) + "\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# TYPE tessera:num_preemptions_total counter\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# TYPE tessera:kv_cache_usage_perc gauge\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# TYPE tessera:request_prompt_tokens histogram\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("# TYPE tessera:request_generation_tokens histogram\n"));
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? )"
      R"(([-+]?[0-9.eE+-]+|\+Inf|-Inf|NaN)$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
    } else {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
    }
  }
}

TEST(EngineScheduling, NotReadyPausesAndReadyResumesByRecompute) {
  Harness h(EngineSetup{});
  Job j{"paused", {4, 5, 6, 7, 8}, 12, 12};
  OutputCallback collect = h.collector.For(j.id);
  int seen = 0;
  OutputCallback pause_at_3 = [&](GenerateOutput out) {
    seen += static_cast<int>(out.token_ids.size());
    collect(std::move(out));
    if (seen == 3) h.engine->SetReady(false);
  };
  ASSERT_TRUE(h.engine->Submit(ToRequest(j), pause_at_3).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return !h.engine->model_info().ready; }));
  const int64_t steps = h.executor.num_steps();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(h.executor.num_steps(), steps);  // nothing runs while not ready
  EXPECT_EQ(h.collector.Get(j.id).tokens.size(), 3u);
  h.executor.Restart();
  h.engine->SetReady(true);
  ASSERT_TRUE(h.collector.WaitFinished(j.id));
  EXPECT_EQ(h.collector.Get(j.id).tokens,
            ReferenceOutput(HashModel(kVocab), j.prompt, j.seed, j.max_tokens));
  EXPECT_THAT(h.executor.violations(), IsEmpty());
}

TEST(EngineMetrics, ReplicasSharingARegistryGetTheirOwnEngineLabel) {
  MetricsRegistry registry;
  FakeStepExecutor a(16, 4, HashModel(kVocab));
  FakeStepExecutor b(16, 4, HashModel(kVocab));
  LlmEngineOptions options;
  options.model_name = "m";
  options.vocab_size = kVocab;
  options.max_model_len = 64;
  options.metrics = &registry;
  auto first = *LlmEngine::Create(&a, options);
  auto second = *LlmEngine::Create(&b, options);
  Collector c;
  ASSERT_TRUE(second->Submit(ToRequest(Job{"x", {1, 2}, 1, 3}), c.For("x")).ok());
  ASSERT_TRUE(second->WaitIdle(10));
  const std::string text = registry.Render();
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "tessera:generation_tokens_total{model_name=\"m\",engine=\"0\"} 0\n"));
  EXPECT_THAT(text, ::testing::HasSubstr(
                        "tessera:generation_tokens_total{model_name=\"m\",engine=\"1\"} 3\n"));
}

TEST(EngineValidation, RejectsBadRequestsNamingTheField) {
  EngineSetup setup;
  setup.max_model_len = 100;
  Harness h(setup);
  auto submit = [&](GenerateRequest r) { return h.engine->Submit(r, h.collector.For("v")); };
  GenerateRequest ok = ToRequest(Job{"v", {1, 2}, 1, 4});
  GenerateRequest r = ok;
  r.prompt_ids.clear();
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("prompt_ids is empty"));
  r = ok;
  r.prompt_ids[1] = kVocab;
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("prompt_ids[1]=5000"));
  r = ok;
  r.sampling.temperature = -1;
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("temperature"));
  r = ok;
  r.sampling.top_p = 0;
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("top_p"));
  r = ok;
  r.sampling.max_tokens = 99;
  absl::Status too_long = submit(r);
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.message(), ::testing::HasSubstr("at most 98"));
  r = ok;
  r.prompt_ids.assign(100, 1);
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("context length is 100"));
  r = ok;
  r.sampling.stop = {"x"};
  EXPECT_THAT(submit(r).message(), ::testing::HasSubstr("no tokenizer"));
  EXPECT_TRUE(submit(ok).ok());
  EXPECT_EQ(submit(ok).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(h.engine->WaitIdle(10));
}

TEST(EngineValidation, ContextLengthIsCappedByKvCapacity) {
  EngineSetup setup;
  setup.num_blocks = 10;  // 40 slots
  Harness h(setup);
  EXPECT_EQ(h.engine->model_info().max_model_len, 40);
  EXPECT_TRUE(h.engine->model_info().ready);
}

TEST(EngineValidation, NotReadyUntilSetReady) {
  FakeStepExecutor executor(16, 4, HashModel(kVocab));
  LlmEngineOptions options;
  options.vocab_size = kVocab;
  options.max_model_len = 64;
  options.start_ready = false;
  auto engine = *LlmEngine::Create(&executor, options);
  Collector c;
  GenerateRequest r = ToRequest(Job{"w", {1, 2}, 1, 3});
  EXPECT_EQ(engine->Submit(r, c.For("w")).code(), absl::StatusCode::kFailedPrecondition);
  engine->SetReady(true);
  ASSERT_TRUE(testing::PollUntil([&] { return engine->model_info().ready; }));
  ASSERT_TRUE(engine->Submit(r, c.For("w")).ok());
  ASSERT_TRUE(c.WaitFinished("w"));
  EXPECT_EQ(c.Get("w").tokens, ReferenceOutput(HashModel(kVocab), {1, 2}, 1, 3));
}

TEST(EngineLifecycle, DestructionEndsLiveRequests) {
  Collector c;
  {
    Harness h(EngineSetup{});
    GenerateRequest r = ToRequest(Job{"live", {1, 2, 3}, 1, 1000});
    ASSERT_TRUE(h.engine->Submit(r, c.For("live")).ok());
  }
  Stream s = c.Get("live");
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.finish_reason, FinishReason::kAbort);
}

}  // namespace
}  // namespace tessera
