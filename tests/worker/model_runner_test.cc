// Tests for the model runtime on tiny make-model checkpoints: the paged KV cache gives the same
// logits as recomputing the whole sequence (block sizes 1, 16, 64, sequences crossing block
// boundaries), batched decoding equals decoding alone, chunked prefill equals one-shot prefill,
// and `tessera generate` writes what it promises.
#include "worker/model_runner.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/checkpoint/model_config.h"
#include "worker/generate_command.h"
#include "worker/make_model.h"
#include "worker/models/model.h"
#include "worker/npy.h"

namespace tessera {
namespace {

const std::string& TinyModel(const std::string& arch) { return testing::TinyModelDir(arch); }

std::vector<int32_t> RandomIds(int n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& v : ids) v = d(rng);
  return ids;
}

// Relative error of row `row` of a against row `ref_row` of b ([rows, vocab] f32).
double RowError(const Tensor& a, int64_t row, const Tensor& b, int64_t ref_row) {
  Tensor x = a.Slice(0, row, row + 1).Clone().value();
  Tensor y = b.Slice(0, ref_row, ref_row + 1).Clone().value();
  return testing::RelativeError(x, y);
}

// One sequence's part of a hand-built batch.
struct SeqChunk {
  std::vector<int32_t> tokens;  // the whole sequence so far
  int64_t start = 0;            // first position computed in this step
  int64_t count = 0;
  std::vector<int32_t> blocks;  // block table
};

absl::Status RunChunks(Model& model, KvCache& cache, const std::vector<SeqChunk>& chunks,
                       Tensor& logits) {
  const int bs = cache.block_size();
  AttentionBatch b;
  b.num_seqs = static_cast<int>(chunks.size());
  b.block_size = bs;
  size_t max_blocks = 1;
  for (const SeqChunk& c : chunks) {
    b.num_tokens += static_cast<int>(c.count);
    max_blocks = std::max(max_blocks, c.blocks.size());
  }
  std::vector<int32_t> ids, pos, tables(b.num_seqs * max_blocks, 0), lens, qsl{0}, last;
  std::vector<int64_t> slots;
  for (size_t s = 0; s < chunks.size(); ++s) {
    const SeqChunk& c = chunks[s];
    for (size_t i = 0; i < c.blocks.size(); ++i) tables[s * max_blocks + i] = c.blocks[i];
    for (int64_t p = c.start; p < c.start + c.count; ++p) {
      ids.push_back(c.tokens[p]);
      pos.push_back(static_cast<int32_t>(p));
      slots.push_back(static_cast<int64_t>(c.blocks[p / bs]) * bs + p % bs);
    }
    lens.push_back(static_cast<int32_t>(c.start + c.count));
    qsl.push_back(static_cast<int32_t>(ids.size()));
    last.push_back(static_cast<int32_t>(ids.size()) - 1);
  }
  const int64_t t = b.num_tokens, n = b.num_seqs;
  b.positions = Tensor::FromVector(absl::MakeConstSpan(pos), {t});
  b.slot_mapping = Tensor::FromVector(absl::MakeConstSpan(slots), {t});
  b.block_tables = Tensor::FromVector(absl::MakeConstSpan(tables),
                                      {n, static_cast<int64_t>(max_blocks)});
  b.seq_lens = Tensor::FromVector(absl::MakeConstSpan(lens), {n});
  b.query_start_loc = Tensor::FromVector(absl::MakeConstSpan(qsl), {n + 1});
  b.last_token_rows = Tensor::FromVector(absl::MakeConstSpan(last), {n});
  Tensor input = Tensor::FromVector(absl::MakeConstSpan(ids), {t});
  return model.ForwardAllLogits(input, b, cache, logits);
}

// ---- Paged cache vs. full recomputation --------------------------------------------------------

class PagedCacheTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(PagedCacheTest, PrefillThenDecodeMatchesFullRecompute) {
  const auto& [arch, bs] = GetParam();
  auto loaded = LoadModelFromDirectory(TinyModel(arch));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& model = *loaded->model;
  const int n = 75, prefill = 23;
  const std::vector<int32_t> tokens = RandomIds(n, model.vocab_size(), 11);
  const int blocks_needed = (n + bs - 1) / bs;

  // Reference: the whole sequence in one pass, identity block table.
  Tensor full;
  {
    auto cache = KvCache::Create(model.KvSpecs(), blocks_needed, bs);
    ASSERT_TRUE(cache.ok()) << cache.status();
    SeqChunk c{tokens, 0, n, {}};
    for (int i = 0; i < blocks_needed; ++i) c.blocks.push_back(i);
    ASSERT_TRUE(RunChunks(model, *cache, {c}, full).ok());
  }
  // Paged: prefill a prefix, then decode one token at a time; blocks in scrambled order with
  // unused blocks in between.
  auto cache = KvCache::Create(model.KvSpecs(), 2 * blocks_needed + 1, bs);
  ASSERT_TRUE(cache.ok()) << cache.status();
  SeqChunk c{tokens, 0, prefill, {}};
  for (int i = 0; i < blocks_needed; ++i) c.blocks.push_back(2 * (blocks_needed - 1 - i) + 1);
  Tensor logits;
  ASSERT_TRUE(RunChunks(model, *cache, {c}, logits).ok());
  double worst = 0;
  for (int r = 0; r < prefill; ++r) worst = std::max(worst, RowError(logits, r, full, r));
  for (int p = prefill; p < n; ++p) {
    c.start = p;
    c.count = 1;
    absl::Status st = RunChunks(model, *cache, {c}, logits);
    ASSERT_TRUE(st.ok()) << st;
    worst = std::max(worst, RowError(logits, 0, full, p));
  }
  EXPECT_LT(worst, 1e-4) << arch << " block_size " << bs;
}

INSTANTIATE_TEST_SUITE_P(Archs, PagedCacheTest,
                         ::testing::Combine(::testing::Values("qwen3_moe", "gpt_oss", "glm4_moe",
                                                              "mixtral", "minimax_m2",
                                                              "qwen2_moe", "llama"),
                                            ::testing::Values(1, 16, 64)));

// ---- Runner: batching, chunking, capacity -------------------------------------------------------

struct RunResult {
  std::map<int64_t, std::vector<int32_t>> tokens;
  std::map<int64_t, std::vector<std::vector<float>>> logits;
};

// Runs `prompts` (ids 0..n-1) to `steps` new tokens each; sequence s joins at step join[s].
absl::StatusOr<RunResult> RunSequences(const std::string& arch,
                                       const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<int>& join, int steps,
                                       const ModelRunnerOptions& base,
                                       const SamplingParams& params) {
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelFromDirectory(TinyModel(arch)));
  ModelRunnerOptions o = base;
  o.return_logits = true;
  ASSIGN_OR_RETURN(auto runner, ModelRunner::Create(std::move(loaded.model), o));
  RunResult result;
  size_t finished = 0;
  for (int step = 0; finished < prompts.size() && step < 1000; ++step) {
    for (size_t s = 0; s < prompts.size(); ++s) {
      if (join[s] == step) RETURN_IF_ERROR(runner->AddSequence(s, prompts[s], params));
    }
    ASSIGN_OR_RETURN(std::vector<StepOutput> outs, runner->Step());
    for (StepOutput& out : outs) {
      result.tokens[out.seq_id].push_back(out.token);
      result.logits[out.seq_id].push_back(std::move(out.logits));
      if (static_cast<int>(result.tokens[out.seq_id].size()) == steps) {
        RETURN_IF_ERROR(runner->RemoveSequence(out.seq_id));
        ++finished;
      }
    }
  }
  if (finished != prompts.size()) return absl::InternalError("sequences did not finish");
  if (runner->num_free_blocks() != o.num_blocks) return absl::InternalError("blocks leaked");
  return result;
}

double VecError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  const double e = std::sqrt(num / den);
  return std::isnan(e) || a.size() != b.size() ? INFINITY : e;
}

void ExpectSameRuns(const RunResult& a, const RunResult& b) {
  ASSERT_EQ(a.tokens.size(), b.tokens.size());
  for (const auto& [id, toks] : b.tokens) {
    EXPECT_EQ(a.tokens.at(id), toks) << "sequence " << id;
    for (size_t i = 0; i < toks.size(); ++i) {
      EXPECT_LT(VecError(a.logits.at(id)[i], b.logits.at(id)[i]), 1e-4)
          << "sequence " << id << " step " << i;
    }
  }
}

class RunnerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RunnerTest, BatchedDecodingEqualsRunningAlone) {
  const std::string arch = GetParam();
  const std::vector<std::vector<int32_t>> prompts = {
      RandomIds(5, 64, 1), RandomIds(17, 64, 2), RandomIds(33, 64, 3)};
  ModelRunnerOptions o;
  o.block_size = 4;
  o.num_blocks = 64;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  // Sequence 2 joins while 0 and 1 decode: mixed prefill + decode steps.
  auto batched = RunSequences(arch, prompts, {0, 0, 3}, 8, o, greedy);
  ASSERT_TRUE(batched.ok()) << batched.status();
  RunResult alone;
  for (size_t s = 0; s < prompts.size(); ++s) {
    std::vector<std::vector<int32_t>> one(prompts.size());
    auto r = RunSequences(arch, {prompts[s]}, {0}, 8, o, greedy);
    ASSERT_TRUE(r.ok()) << r.status();
    alone.tokens[s] = r->tokens[0];
    alone.logits[s] = r->logits[0];
  }
  ExpectSameRuns(*batched, alone);
}

TEST_P(RunnerTest, ChunkedPrefillEqualsOneShotPrefill) {
  const std::string arch = GetParam();
  const std::vector<std::vector<int32_t>> prompts = {RandomIds(29, 64, 4), RandomIds(12, 64, 5)};
  ModelRunnerOptions o;
  o.block_size = 16;
  o.num_blocks = 16;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  auto one_shot = RunSequences(arch, prompts, {0, 0}, 5, o, greedy);
  ASSERT_TRUE(one_shot.ok()) << one_shot.status();
  o.max_tokens_per_step = 7;
  auto chunked = RunSequences(arch, prompts, {0, 0}, 5, o, greedy);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  ExpectSameRuns(*chunked, *one_shot);
}

TEST_P(RunnerTest, SeededSamplingIsIndependentOfTheBatch) {
  const std::string arch = GetParam();
  const std::vector<std::vector<int32_t>> prompts = {RandomIds(9, 64, 6), RandomIds(14, 64, 7)};
  ModelRunnerOptions o;
  o.block_size = 8;
  o.num_blocks = 16;
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  auto batched = RunSequences(arch, prompts, {0, 2}, 6, o, p);
  ASSERT_TRUE(batched.ok()) << batched.status();
  auto alone = RunSequences(arch, {prompts[1]}, {0}, 6, o, p);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(batched->tokens.at(1), alone->tokens.at(0));
}

INSTANTIATE_TEST_SUITE_P(Archs, RunnerTest, ::testing::Values("qwen3_moe", "gpt_oss", "glm4_moe"));

TEST(RunnerErrorsTest, FullCacheIsResourceExhausted) {
  auto loaded = LoadModelFromDirectory(TinyModel("qwen3_moe"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ModelRunnerOptions o;
  o.block_size = 4;
  o.num_blocks = 2;
  auto runner = ModelRunner::Create(std::move(loaded->model), o);
  ASSERT_TRUE(runner.ok()) << runner.status();
  ASSERT_TRUE((*runner)->AddSequence(0, RandomIds(9, 64, 8)).ok());
  auto step = (*runner)->Step();
  EXPECT_EQ(step.status().code(), absl::StatusCode::kResourceExhausted) << step.status();
  EXPECT_EQ((*runner)->num_free_blocks(), 2);
}

TEST(RunnerErrorsTest, PromptTokenOutOfVocabularyIsRejected) {
  auto loaded = LoadModelFromDirectory(TinyModel("qwen3_moe"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const int64_t vocab = loaded->model->vocab_size();
  auto runner = ModelRunner::Create(std::move(loaded->model), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  absl::Status st = (*runner)->AddSequence(0, {1, static_cast<int32_t>(vocab)});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("prompt token 1"), std::string::npos) << st;
}

// ---- tessera generate ----------------------------------------------------------------------------

TEST(GenerateTest, DumpedLogitsMatchTheModelAndGreedyTokens) {
  const std::string dir = TinyModel("qwen3_moe");
  const std::string npy = testing::MakeTempDir("generate_dump") + "/logits.npy";
  GenerateOptions o;
  o.model_dir = dir;
  o.prompt_ids = {3, 14, 15, 9, 26};
  o.max_tokens = 6;
  o.temperature = 0.0f;
  o.dump_logits = npy;
  o.block_size = 4;
  auto r = Generate(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GE(r->output_ids.size(), 1u);
  auto logits = ReadNpy(npy);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->dim(0), static_cast<int64_t>(r->output_ids.size()));
  const float* p = logits->data<float>();
  const int64_t vocab = logits->dim(1);
  for (size_t i = 0; i < r->output_ids.size(); ++i) {
    const float* row = p + i * vocab;
    EXPECT_EQ(std::max_element(row, row + vocab) - row, r->output_ids[i]) << "step " << i;
  }
  // Row 0 equals the model's logits for the prompt's last token.
  auto loaded = LoadModelFromDirectory(dir);
  ASSERT_TRUE(loaded.ok());
  auto cache = KvCache::Create(loaded->model->KvSpecs(), 4, 4);
  ASSERT_TRUE(cache.ok());
  SeqChunk c{o.prompt_ids, 0, 5, {0, 1}};
  Tensor full;
  ASSERT_TRUE(RunChunks(*loaded->model, *cache, {c}, full).ok());
  EXPECT_LT(RowError(*logits, 0, full, 4), 1e-5);
}

TEST(GenerateTest, CommandPrintsJson) {
  const std::string dir = TinyModel("gpt_oss");
  const std::string out = testing::MakeTempDir("generate_cli") + "/out.json";
  const std::string cmd = testing::TesseraBinary() + " generate --model " + dir +
                          " --prompt-ids 1,2,3 --max-tokens 4 --temperature 0 --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["prompt_ids"], nlohmann::json({1, 2, 3}));
  EXPECT_GE(j["output_ids"].size(), 1u);
  EXPECT_LE(j["output_ids"].size(), 4u);
  EXPECT_TRUE(j["text"].is_null());
  EXPECT_TRUE(j["finish_reason"] == "stop" || j["finish_reason"] == "length");
  EXPECT_TRUE(j["timings"].contains("load_s"));
  EXPECT_TRUE(j["timings"].contains("decode_tokens_per_s"));
}

TEST(GenerateTest, TextPromptIsAClearError) {
  GenerateOptions o;
  const std::string cmd = testing::TesseraBinary() + " generate --model " +
                          TinyModel("llama") + " --prompt hello --max-tokens 2 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string text;
  char buf[256];
  while (fgets(buf, sizeof buf, pipe)) text += buf;
  EXPECT_NE(pclose(pipe), 0);
  EXPECT_NE(text.find("--prompt-ids"), std::string::npos) << text;
}

}  // namespace
}  // namespace tessera
