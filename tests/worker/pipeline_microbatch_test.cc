// Pipeline micro-batches (DecoderEnds::ForwardStage): with pp stages and several sequences in a
// step, the batch is cut into micro-batches that flow through the stages with asynchronous
// sends; the tokens and logits must equal one rank's. Real processes over Gloo on 127.0.0.1.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "tests/parallel/multi_process.h"
#include "tests/test_util.h"
#include "worker/model_runner.h"
#include "worker/models/layers.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

using testing::ConnectRank;
using testing::MakeAttentionBatch;
using testing::MakeTempDir;
using testing::RunRanks;
using testing::TesseraBinary;

constexpr int kSteps = 5;

// Three sequences of different prompt lengths, greedy, kSteps steps; rank 0 writes every
// sampled token and its logits (one line per (step, sequence): token then the logits) to `out`.
// Returns an error when a pipelined run never used more than one micro-batch.
absl::Status RunSequences(int rank, int world, const std::string& dir, const std::string& model,
                          int tp, int pp, const std::string& out) {
  ThreadPool::SetDefaultThreads(1);
  std::unique_ptr<GlooCommunicator> comm;
  ModelLoadOptions load;
  load.SetLayout(tp, 1, 1, pp, rank);
  if (world > 1) {
    ASSIGN_OR_RETURN(comm, ConnectRank(rank, world, dir));
    load.comm = comm.get();
  }
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelFromDirectory(model, load));
  ModelRunnerOptions ro;
  ro.num_blocks = 16;
  ro.return_logits = true;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   ModelRunner::Create(std::move(loaded.model), ro));
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<std::vector<int32_t>> prompts = {
      {3, 1, 4, 1, 5}, {9, 2, 6, 5, 3, 5, 8, 9, 7}, {2, 7, 1}};
  for (size_t s = 0; s < prompts.size(); ++s) {
    RETURN_IF_ERROR(runner->AddSequence(static_cast<int64_t>(s), prompts[s], greedy));
  }
  std::string text;
  int max_micro_batches = 0;
  for (int step = 0; step < kSteps; ++step) {
    ASSIGN_OR_RETURN(std::vector<StepOutput> outs, runner->Step());
    max_micro_batches = std::max(max_micro_batches, runner->model().last_micro_batches());
    for (const StepOutput& o : outs) {
      absl::StrAppend(&text, step, " ", o.seq_id, " ", o.token);
      for (float v : o.logits) absl::StrAppend(&text, " ", v);
      text += "\n";
    }
  }
  if (pp > 1) {
    RANK_EXPECT(max_micro_batches == std::min<int>(pp, prompts.size()),
                "micro-batches: ", max_micro_batches);
  }
  if (rank == 0) {
    std::ofstream f(out);
    f << text;
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", out));
  }
  return absl::OkStatus();
}

struct Row {
  std::string key;  // "step seq"
  int token = -1;
  std::vector<double> logits;
};

std::vector<Row> ReadRows(const std::string& path) {
  std::vector<Row> rows;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    Row r;
    int step = 0, seq = 0;
    in >> step >> seq >> r.token;
    r.key = absl::StrCat(step, " ", seq);
    double v;
    while (in >> v) r.logits.push_back(v);
    rows.push_back(std::move(r));
  }
  return rows;
}

// Runs the layout and compares it with one rank on the same checkpoint.
void ExpectPipelineMatchesOneRank(const std::string& arch, int tp, int pp) {
  // make-model in its own process: this one must stay single-threaded for fork.
  const std::string dir = MakeTempDir("pipeline_" + arch);
  const std::string model = dir + "/model";
  ASSERT_EQ(std::system(absl::StrCat(TesseraBinary(), " make-model --arch ", arch,
                                     " --preset tiny --dtype f32 --seed 5 --out ", model,
                                     " > /dev/null")
                            .c_str()),
            0);
  const std::string ref = dir + "/ref.txt", got = dir + "/got.txt";
  auto one = RunRanks(1, [&](int rank, int world, const std::string& store) {
    return RunSequences(rank, world, store, model, 1, 1, ref);
  });
  ASSERT_TRUE(one[0].ok()) << one[0].message;
  auto results = RunRanks(tp * pp, [&](int rank, int world, const std::string& store) {
    return RunSequences(rank, world, store, model, tp, pp, got);
  });
  for (size_t r = 0; r < results.size(); ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].message;
  }
  const std::vector<Row> want = ReadRows(ref), have = ReadRows(got);
  ASSERT_EQ(want.size(), 3u * kSteps);
  ASSERT_EQ(have.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(have[i].key, want[i].key);
    EXPECT_EQ(have[i].token, want[i].token) << "step/seq " << want[i].key;
    ASSERT_EQ(have[i].logits.size(), want[i].logits.size());
    double num = 0, den = 0;
    for (size_t j = 0; j < want[i].logits.size(); ++j) {
      const double d = have[i].logits[j] - want[i].logits[j];
      num += d * d;
      den += want[i].logits[j] * want[i].logits[j];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-4) << "step/seq " << want[i].key;
  }
}

TEST(PipelineMicroBatchTest, TwoStagesMatchOneRank) {
  ExpectPipelineMatchesOneRank("qwen3_moe", 1, 2);
}

TEST(PipelineMicroBatchTest, TwoStagesOfTwoTensorParallelRanksMatchOneRank) {
  ExpectPipelineMatchesOneRank("deepseek_v3", 2, 2);
}

TEST(PipelineMicroBatchTest, SliceAttentionBatchRenumbersRows) {
  // Three sequences of 2, 1 and 3 tokens; the middle + last as a batch of their own.
  AttentionBatch b = MakeAttentionBatch({{{0}, 0, 2}, {{1}, 4, 1}, {{2, 3}, 16, 3}}, 16);
  absl::StatusOr<AttentionBatch> s = SliceAttentionBatch(b, 1, 3);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->num_seqs, 2);
  EXPECT_EQ(s->num_tokens, 4);
  EXPECT_EQ(s->query_start_loc.data<int32_t>()[0], 0);
  EXPECT_EQ(s->query_start_loc.data<int32_t>()[1], 1);
  EXPECT_EQ(s->query_start_loc.data<int32_t>()[2], 4);
  EXPECT_EQ(s->last_token_rows.data<int32_t>()[0], 0);
  EXPECT_EQ(s->last_token_rows.data<int32_t>()[1], 3);
  EXPECT_EQ(s->positions.data<int32_t>()[0], 4);
  EXPECT_EQ(s->seq_lens.data<int32_t>()[1], 19);
  EXPECT_EQ(s->block_tables.dim(0), 2);
  EXPECT_FALSE(SliceAttentionBatch(b, 2, 2).ok());
}

}  // namespace
}  // namespace tessera
