// CUDA sampling (kernels/cuda/sampling.cu) against the CPU sampler: greedy with penalties (the
// penalised logits and the raw logprob too), seeded draws with temperature, top-k, top-p, min-p
// and their combinations, a batch of rows with different parameters in one launch, and invalid
// logits. Skips without a CUDA device.
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {
namespace {

using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

constexpr int64_t kVocab = 32000;

class CudaSamplingTest : public testing::CudaKernelTest {};

void ExpectSameSample(const Tensor& logits, const SamplingParams& params,
                      const std::vector<int32_t>& prompt, const std::vector<int32_t>& output,
                      uint64_t step) {
  Tensor cpu_logits = logits.Clone().value();
  absl::StatusOr<SampleResult> ref = Sample(cpu_logits, params, prompt, output, step, 0.5);
  ASSERT_TRUE(ref.ok()) << ref.status();
  Tensor dev = ToCuda(logits);
  absl::StatusOr<SampleResult> got = Sample(dev, params, prompt, output, step, 0.5);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->token, ref->token) << "step " << step;
  EXPECT_NEAR(got->logprob, ref->logprob, 1e-4);
  EXPECT_LT(RelativeError(ToHost(dev), cpu_logits), 1e-6);  // the same penalised logits
}

TEST_F(CudaSamplingTest, GreedyMatchesCpu) {
  SamplingParams p;
  p.temperature = 0.0f;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    ExpectSameSample(RandomTensor({kVocab}, 100 + seed, -10.0f, 10.0f), p, {}, {}, 0);
  }
}

TEST_F(CudaSamplingTest, GreedyWithPenaltiesMatchesCpu) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  const std::vector<int32_t> prompt = {5, 17, 17, 400, 31999};
  const std::vector<int32_t> output = {17, 9, 9, 9, 123};
  ExpectSameSample(RandomTensor({kVocab}, 7, -3.0f, 3.0f), p, prompt, output, 0);
}

TEST_F(CudaSamplingTest, SeededDrawsMatchCpuForEveryFilterCombination) {
  struct Filters {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
  };
  const Filters cases[] = {{1.0f, 0, 1.0f, 0.0f},  {0.7f, 50, 1.0f, 0.0f}, {0.9f, 0, 0.9f, 0.0f},
                           {1.2f, 0, 1.0f, 0.05f}, {0.8f, 40, 0.8f, 0.02f}, {1.0f, 1, 1.0f, 0.0f}};
  const Tensor logits = RandomTensor({kVocab}, 11, -8.0f, 8.0f);
  for (const Filters& f : cases) {
    SamplingParams p;
    p.temperature = f.temperature;
    p.top_k = f.top_k;
    p.top_p = f.top_p;
    p.min_p = f.min_p;
    p.seed = 1234;
    for (uint64_t step = 0; step < 8; ++step) {
      SCOPED_TRACE(::testing::Message() << "T=" << f.temperature << " k=" << f.top_k
                                        << " p=" << f.top_p << " min_p=" << f.min_p);
      ExpectSameSample(logits, p, {}, {}, step);
    }
  }
}

TEST_F(CudaSamplingTest, TiedLogitsRankByIndexLikeTheCpu) {
  // Every logit one of three values: top-k and top-p cut inside runs of equal logits.
  Tensor logits = Tensor::Empty({4096}, DType::kF32).value();
  for (int64_t i = 0; i < 4096; ++i) logits.data<float>()[i] = static_cast<float>(i % 3);
  SamplingParams p;
  p.top_k = 100;
  p.top_p = 0.5f;
  p.seed = 3;
  for (uint64_t step = 0; step < 8; ++step) ExpectSameSample(logits, p, {}, {}, step);
}

TEST_F(CudaSamplingTest, NanLogitIsInvalidArgument) {
  Tensor logits = RandomTensor({1000}, 12);
  logits.data<float>()[77] = std::numeric_limits<float>::quiet_NaN();
  Tensor dev = ToCuda(logits);
  absl::StatusOr<SampleResult> r = Sample(dev, SamplingParams{}, {}, {}, 0, 0.5);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("77"), absl::string_view::npos) << r.status();
}

#ifdef TESSERA_WITH_CUDA
TEST_F(CudaSamplingTest, BatchOfRowsWithDifferentParamsMatchesPerRowCpu) {
  const int64_t rows = 4;
  const Tensor logits = RandomTensor({rows, kVocab}, 13, -6.0f, 6.0f);
  std::vector<SamplingParams> params(rows);
  params[0].temperature = 0.0f;
  params[1].top_k = 20;
  params[1].seed = 5;
  params[2].top_p = 0.7f;
  params[2].repetition_penalty = 1.2f;
  params[2].seed = 6;
  params[3].min_p = 0.1f;
  params[3].temperature = 0.5f;
  const std::vector<std::vector<int32_t>> prompts = {{}, {1, 2}, {3, 4, 5}, {}};
  const std::vector<std::vector<int32_t>> outputs = {{}, {7}, {8, 8}, {9}};
  std::vector<absl::Span<const int32_t>> ps, os;
  for (int64_t r = 0; r < rows; ++r) {
    ps.push_back(prompts[r]);
    os.push_back(outputs[r]);
  }
  const std::vector<uint64_t> steps = {0, 1, 2, 3};
  const std::vector<double> fallback = {0.1, 0.2, 0.3, 0.4};
  Tensor dev = ToCuda(logits);
  absl::StatusOr<std::vector<SampleResult>> got =
      cuda::SampleRows(dev, params, ps, os, steps, fallback);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int64_t r = 0; r < rows; ++r) {
    Tensor row = logits.Select(0, r).Clone().value();
    absl::StatusOr<SampleResult> ref =
        Sample(row, params[r], prompts[r], outputs[r], steps[r], fallback[r]);
    ASSERT_TRUE(ref.ok());
    EXPECT_EQ((*got)[r].token, ref->token) << "row " << r;
    EXPECT_NEAR((*got)[r].logprob, ref->logprob, 1e-4) << "row " << r;
  }
}
#endif

}  // namespace
}  // namespace tessera
