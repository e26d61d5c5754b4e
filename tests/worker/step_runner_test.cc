// Tests for the worker side of the step protocol: StepRunner executing StepPlans on tiny
// make-model checkpoints gives the same tokens and logits as the ModelRunner reference (plans that
// prefill in one step or in chunks, batched decoding, seeded sampling), reuses prefix-cache blocks
// correctly, resumes a preempted sequence with identical samples, and rejects bad plans without
// changing its state.
#include "worker/step_runner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "tests/test_util.h"
#include "worker/make_model.h"
#include "worker/model_runner.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

constexpr int kBlock = 4;

const std::string& TinyModel(const std::string& arch) { return testing::TinyModelDir(arch); }

std::unique_ptr<StepRunner> MakeRunner(const std::string& arch, int num_blocks = 64) {
  auto loaded = LoadModelFromDirectory(TinyModel(arch));
  CHECK(loaded.ok()) << loaded.status();
  StepRunnerOptions o;
  o.num_blocks = num_blocks;
  o.block_size = kBlock;
  o.keep_logits = true;
  auto runner = StepRunner::Create(std::move(*loaded), o);
  CHECK(runner.ok()) << runner.status();
  return std::move(*runner);
}

std::vector<int32_t> RandomIds(int n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& v : ids) v = d(rng);
  return ids;
}

v1::SeqSampling Greedy() {
  v1::SeqSampling s;
  s.set_temperature(0);
  s.set_top_p(1);
  s.set_repetition_penalty(1);
  s.set_seed(1);
  return s;
}

v1::SeqSampling Seeded(uint64_t seed) {
  v1::SeqSampling s = Greedy();
  s.set_temperature(0.9f);
  s.set_top_k(20);
  s.set_seed(seed);
  return s;
}

// A minimal coordinator for tests: every sequence gets fresh blocks from a counter, prompts are
// prefilled in chunks of `chunk` tokens, then one token per step is decoded until each sequence
// has `max_tokens` outputs. Returns the outputs and the logits of every sample.
struct Driven {
  std::vector<std::vector<int32_t>> outputs;
  std::vector<std::vector<std::vector<float>>> logits;
};

Driven Drive(StepRunner& runner, const std::vector<std::vector<int32_t>>& prompts,
             const std::vector<v1::SeqSampling>& sampling, int max_tokens, int chunk) {
  const size_t n = prompts.size();
  Driven d;
  d.outputs.resize(n);
  d.logits.resize(n);
  std::vector<int64_t> computed(n, 0), nblocks(n, 0);
  std::vector<bool> joined(n, false);
  std::vector<int32_t> pending(n, -1);
  int next_block = 0;
  auto blocks_for = [&](int64_t tokens) { return (tokens + kBlock - 1) / kBlock; };
  for (uint64_t step = 0; step < 1000; ++step) {
    v1::StepPlan plan;
    plan.set_step_id(step);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<int>(d.outputs[i].size()) >= max_tokens) {
        if (joined[i]) {
          plan.add_finished_seq_ids(i);
          joined[i] = false;
        }
        continue;
      }
      any = true;
      const int64_t len = static_cast<int64_t>(prompts[i].size() + d.outputs[i].size());
      const int64_t todo = std::min<int64_t>(len - computed[i], chunk);
      const int64_t need = blocks_for(computed[i] + todo);
      if (!joined[i]) {
        v1::NewSeq* s = plan.add_new_seqs();
        s->set_seq_id(i);
        for (int32_t t : prompts[i]) s->add_token_ids(t);
        s->set_num_scheduled_tokens(static_cast<int32_t>(todo));
        for (; nblocks[i] < need; ++nblocks[i]) s->add_block_ids(next_block++);
        *s->mutable_sampling() = sampling[i];
        joined[i] = true;
      } else {
        v1::CachedSeq* s = plan.add_cached_seqs();
        s->set_seq_id(i);
        if (pending[i] >= 0) s->add_append_token_ids(pending[i]);
        pending[i] = -1;
        s->set_num_scheduled_tokens(static_cast<int32_t>(todo));
        for (; nblocks[i] < need; ++nblocks[i]) s->add_new_block_ids(next_block++);
      }
      computed[i] += todo;
    }
    if (!any) {
      CHECK(runner.Execute(plan).ok());  // releases the finished sequences
      break;
    }
    auto r = runner.Execute(plan);
    CHECK(r.ok()) << r.status();
    for (const v1::SampledToken& t : r->sampled()) {
      d.outputs[t.seq_id()].push_back(t.token_id());
      d.logits[t.seq_id()].push_back(*runner.LastLogits(t.seq_id()));
      pending[t.seq_id()] = t.token_id();
    }
  }
  return d;
}

// The reference: ModelRunner with the same prompts and sampling.
Driven Reference(const std::string& arch, const std::vector<std::vector<int32_t>>& prompts,
                 const std::vector<v1::SeqSampling>& sampling, int max_tokens) {
  auto loaded = LoadModelFromDirectory(TinyModel(arch));
  CHECK(loaded.ok()) << loaded.status();
  ModelRunnerOptions o;
  o.block_size = kBlock;
  o.num_blocks = 256;
  o.return_logits = true;
  auto runner = ModelRunner::Create(std::move(loaded->model), o);
  CHECK(runner.ok()) << runner.status();
  Driven d;
  d.outputs.resize(prompts.size());
  d.logits.resize(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingParams p;
    p.temperature = sampling[i].temperature();
    p.top_k = sampling[i].top_k();
    p.seed = sampling[i].seed();
    CHECK((*runner)->AddSequence(static_cast<int64_t>(i), prompts[i], p).ok());
  }
  for (int step = 0; step < 1000; ++step) {
    auto outs = (*runner)->Step();
    CHECK(outs.ok()) << outs.status();
    bool live = false;
    for (StepOutput& o : *outs) {
      d.outputs[o.seq_id].push_back(o.token);
      d.logits[o.seq_id].push_back(o.logits);
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      if ((*runner)->HasSequence(i) && static_cast<int>(d.outputs[i].size()) >= max_tokens) {
        CHECK((*runner)->RemoveSequence(i).ok());
      }
      live = live || (*runner)->HasSequence(i);
    }
    if (!live) break;
  }
  return d;
}

double VecError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
    den += b[i] * static_cast<double>(b[i]);
  }
  return std::isnan(num) ? 1e9 : std::sqrt(num / std::max(den, 1e-30));
}

void ExpectSame(const Driven& got, const Driven& want) {
  ASSERT_EQ(got.outputs.size(), want.outputs.size());
  for (size_t i = 0; i < got.outputs.size(); ++i) {
    EXPECT_EQ(got.outputs[i], want.outputs[i]) << "sequence " << i;
    ASSERT_EQ(got.logits[i].size(), want.logits[i].size());
    for (size_t k = 0; k < got.logits[i].size(); ++k) {
      EXPECT_LT(VecError(got.logits[i][k], want.logits[i][k]), 1e-5)
          << "sequence " << i << " sample " << k;
    }
  }
}

class StepRunnerArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StepRunnerArchTest, BatchedPlansMatchTheModelRunner) {
  auto runner = MakeRunner(GetParam());
  const int64_t vocab = runner->model().vocab_size();
  std::vector<std::vector<int32_t>> prompts = {RandomIds(9, vocab, 1), RandomIds(3, vocab, 2),
                                               RandomIds(14, vocab, 3)};
  std::vector<v1::SeqSampling> sampling = {Greedy(), Seeded(5), Greedy()};
  Driven got = Drive(*runner, prompts, sampling, 6, /*chunk=*/1000);
  ExpectSame(got, Reference(GetParam(), prompts, sampling, 6));
  EXPECT_EQ(runner->num_sequences(), 0);
}

TEST_P(StepRunnerArchTest, ChunkedPrefillPlansMatchTheModelRunner) {
  auto runner = MakeRunner(GetParam());
  const int64_t vocab = runner->model().vocab_size();
  std::vector<std::vector<int32_t>> prompts = {RandomIds(11, vocab, 4), RandomIds(6, vocab, 5)};
  std::vector<v1::SeqSampling> sampling = {Greedy(), Seeded(9)};
  Driven got = Drive(*runner, prompts, sampling, 4, /*chunk=*/3);
  ExpectSame(got, Reference(GetParam(), prompts, sampling, 4));
}

INSTANTIATE_TEST_SUITE_P(Archs, StepRunnerArchTest,
                         ::testing::Values("qwen3_moe", "deepseek_v3", "gpt_oss"));

// Runs one new sequence to completion of its prompt (one step) and returns the sample.
v1::SampledToken RunNew(StepRunner& runner, uint64_t id, const std::vector<int32_t>& tokens,
                        int64_t num_outputs, int64_t computed, std::vector<int32_t> blocks,
                        const v1::SeqSampling& sampling) {
  v1::StepPlan plan;
  v1::NewSeq* s = plan.add_new_seqs();
  s->set_seq_id(id);
  for (int32_t t : tokens) s->add_token_ids(t);
  s->set_num_output_tokens(num_outputs);
  s->set_num_computed_tokens(computed);
  s->set_num_scheduled_tokens(static_cast<int32_t>(tokens.size() - computed));
  for (int32_t b : blocks) s->add_block_ids(b);
  *s->mutable_sampling() = sampling;
  auto r = runner.Execute(plan);
  CHECK(r.ok()) << r.status();
  CHECK_EQ(r->sampled_size(), 1);
  return r->sampled(0);
}

TEST(StepRunnerTest, PrefixCacheBlocksOfAFinishedSequenceAreReused) {
  auto runner = MakeRunner("qwen3_moe");
  const int64_t vocab = runner->model().vocab_size();
  std::vector<int32_t> prefix = RandomIds(2 * kBlock, vocab, 21);
  std::vector<int32_t> a = prefix, b = prefix;
  for (int32_t t : RandomIds(3, vocab, 22)) a.push_back(t);
  for (int32_t t : RandomIds(5, vocab, 23)) b.push_back(t);
  RunNew(*runner, 1, a, 0, 0, {0, 1, 2}, Greedy());
  v1::StepPlan release;
  release.add_finished_seq_ids(1);
  ASSERT_TRUE(runner->Execute(release).ok());
  // b starts with a's two full blocks already computed, then computes its own tail in block 3.
  v1::SampledToken reused = RunNew(*runner, 2, b, 0, 2 * kBlock, {0, 1, 3, 4}, Greedy());
  std::vector<float> reused_logits = *runner->LastLogits(2);
  v1::SampledToken fresh = RunNew(*runner, 3, b, 0, 0, {5, 6, 7, 8}, Greedy());
  EXPECT_EQ(reused.token_id(), fresh.token_id());
  EXPECT_LT(VecError(reused_logits, *runner->LastLogits(3)), 1e-6);
}

TEST(StepRunnerTest, PreemptedSequenceResumesWithIdenticalSamples) {
  const std::string arch = "qwen3_moe";
  auto runner = MakeRunner(arch);
  const int64_t vocab = runner->model().vocab_size();
  std::vector<int32_t> prompt = RandomIds(7, vocab, 31);
  v1::SeqSampling sampling = Seeded(77);
  sampling.set_frequency_penalty(0.5f);
  Driven whole = Drive(*runner, {prompt}, {sampling}, 6, 1000);
  // Recompute after 3 outputs: the context is prompt + outputs, 3 of them outputs.
  std::vector<int32_t> context = prompt;
  context.insert(context.end(), whole.outputs[0].begin(), whole.outputs[0].begin() + 3);
  std::vector<int32_t> blocks;
  for (int b = 0; b < 4; ++b) blocks.push_back(20 + b);
  v1::SampledToken t = RunNew(*runner, 9, context, 3, 0, blocks, sampling);
  EXPECT_EQ(t.token_id(), whole.outputs[0][3]);
  EXPECT_LT(VecError(*runner->LastLogits(9), whole.logits[0][3]), 1e-5);
}

TEST(StepRunnerTest, LogprobsAreTheRawLogSoftmaxWithSortedAlternatives) {
  auto runner = MakeRunner("qwen3_moe");
  const int64_t vocab = runner->model().vocab_size();
  v1::SeqSampling sampling = Seeded(3);
  sampling.set_num_top_logprobs(5);
  v1::SampledToken t = RunNew(*runner, 1, RandomIds(5, vocab, 41), 0, 0, {0, 1}, sampling);
  const std::vector<float>& raw = *runner->LastLogits(1);
  double z = 0;
  for (float v : raw) z += std::exp(static_cast<double>(v));
  EXPECT_NEAR(t.logprob(), raw[t.token_id()] - std::log(z), 1e-4);
  ASSERT_EQ(t.top_logprobs_size(), 5);
  for (int i = 1; i < 5; ++i) {
    EXPECT_GE(t.top_logprobs(i - 1).logprob(), t.top_logprobs(i).logprob());
  }
  EXPECT_NEAR(t.top_logprobs(0).logprob(),
              *std::max_element(raw.begin(), raw.end()) - std::log(z), 1e-4);
}

TEST(StepRunnerTest, MinTokensBansStopIdsUntilEnoughOutputs) {
  auto runner = MakeRunner("qwen3_moe");
  const int64_t vocab = runner->model().vocab_size();
  const std::vector<int32_t> prompt = RandomIds(6, vocab, 51);
  const int32_t greedy = RunNew(*runner, 1, prompt, 0, 0, {0, 1}, Greedy()).token_id();
  const std::vector<float> raw = *runner->LastLogits(1);
  // Banned while fewer than min_tokens outputs: the next best token, with the raw logprob.
  v1::SeqSampling banned = Greedy();
  banned.set_min_tokens(1);
  banned.add_min_tokens_banned_ids(greedy);
  v1::SampledToken t = RunNew(*runner, 2, prompt, 0, 0, {2, 3}, banned);
  std::vector<float> rest = raw;
  rest[greedy] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(t.token_id(), std::max_element(rest.begin(), rest.end()) - rest.begin());
  double z = 0;
  for (float v : raw) z += std::exp(static_cast<double>(v));
  EXPECT_NEAR(t.logprob(), raw[t.token_id()] - std::log(z), 1e-4);
  // The same context counted as one output already: min_tokens 1 is reached, no ban.
  EXPECT_EQ(RunNew(*runner, 3, prompt, 1, 0, {4, 5}, banned).token_id(), greedy);
}

TEST(StepRunnerTest, BadPlansAreRejectedWithoutChangingState) {
  auto runner = MakeRunner("qwen3_moe", /*num_blocks=*/8);
  const int64_t vocab = runner->model().vocab_size();
  std::vector<int32_t> prompt = RandomIds(6, vocab, 51);
  auto new_seq = [&](uint64_t id, std::vector<int32_t> tokens, std::vector<int32_t> blocks) {
    v1::StepPlan plan;
    v1::NewSeq* s = plan.add_new_seqs();
    s->set_seq_id(id);
    for (int32_t t : tokens) s->add_token_ids(t);
    s->set_num_scheduled_tokens(static_cast<int32_t>(tokens.size()));
    for (int32_t b : blocks) s->add_block_ids(b);
    *s->mutable_sampling() = Greedy();
    return plan;
  };
  auto expect_error = [&](const v1::StepPlan& plan, absl::StatusCode code, const char* what) {
    auto r = runner->Execute(plan);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
  };
  std::vector<int32_t> bad_token = prompt;
  bad_token[2] = static_cast<int32_t>(vocab);
  expect_error(new_seq(1, bad_token, {0, 1}), absl::StatusCode::kInvalidArgument, "token_ids[2]");
  expect_error(new_seq(1, prompt, {0}), absl::StatusCode::kInvalidArgument, "needs 2");
  expect_error(new_seq(1, prompt, {0, 8}), absl::StatusCode::kInvalidArgument, "block_ids[1]");
  v1::StepPlan unknown;
  unknown.add_cached_seqs()->set_seq_id(42);
  expect_error(unknown, absl::StatusCode::kFailedPrecondition, "cached seq 42");
  v1::StepPlan twice = new_seq(1, prompt, {0, 1});
  *twice.add_new_seqs() = twice.new_seqs(0);
  expect_error(twice, absl::StatusCode::kInvalidArgument, "appears twice");
  EXPECT_EQ(runner->num_sequences(), 0);
  // The state is intact: a good plan still runs, and a second join of the same id is refused.
  ASSERT_TRUE(runner->Execute(new_seq(1, prompt, {0, 1})).ok());
  expect_error(new_seq(1, prompt, {2, 3}), absl::StatusCode::kFailedPrecondition,
               "already running");
  v1::StepPlan over;
  v1::CachedSeq* c = over.add_cached_seqs();
  c->set_seq_id(1);
  c->set_num_scheduled_tokens(1);  // nothing appended: no token left to compute
  expect_error(over, absl::StatusCode::kInvalidArgument, "schedules 1");
}

}  // namespace
}  // namespace tessera
