// CUDA normalisation, elementwise and RoPE kernels (kernels/cuda/elementwise.cu) against the CPU
// kernels on random inputs: RmsNorm (+ residual), SiLU-and-mul, gpt-oss clamped SwiGLU, softmax,
// embedding (f32/bf16/f16, vocab-parallel shard), axpy, and every RoPE variant of the CPU path
// (neox / GPT-J, partial rotary, linear, YaRN with attention scaling, Llama 3, i32 / i64
// positions, strided views). Skips without a CUDA device.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::PoisonedCuda;
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

class CudaElementwiseTest : public testing::CudaKernelTest {};

TEST_F(CudaElementwiseTest, RmsNormMatchesCpu) {
  for (int64_t hidden : {7, 128, 4096}) {
    const Tensor x = RandomTensor({5, hidden}, 1), w = RandomTensor({hidden}, 2, 0.5f, 1.5f);
    Tensor ref = Tensor::Empty({5, hidden}, DType::kF32).value();
    ASSERT_TRUE(RmsNorm(x, w, 1e-6f, ref).ok());
    Tensor out = PoisonedCuda({5, hidden});
    ASSERT_TRUE(RmsNorm(ToCuda(x), ToCuda(w), 1e-6f, out).ok());
    EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5) << hidden;
  }
}

TEST_F(CudaElementwiseTest, PerHeadRmsNormOnAStridedView) {
  // q-norm on [tokens, heads, head_dim] inside a fused qkv row of width 3 * 4 * 64.
  const Tensor qkv = RandomTensor({6, 768}, 3), w = RandomTensor({64}, 4);
  const Tensor q = qkv.Slice(1, 0, 256).AsStrided({6, 4, 64}, {768, 64, 1});
  Tensor ref = Tensor::Empty({6, 4, 64}, DType::kF32).value();
  ASSERT_TRUE(RmsNorm(q, w, 1e-6f, ref).ok());
  const Tensor dq = ToCuda(qkv).AsStrided({6, 4, 64}, {768, 64, 1});
  Tensor out = PoisonedCuda({6, 4, 64});
  ASSERT_TRUE(RmsNorm(dq, ToCuda(w), 1e-6f, out).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);
}

TEST_F(CudaElementwiseTest, AddRmsNormUpdatesResidualAndNormalises) {
  const Tensor residual = RandomTensor({9, 1000}, 5), delta = RandomTensor({9, 1000}, 6);
  const Tensor w = RandomTensor({1000}, 7);
  Tensor ref_res = residual.Clone().value();
  Tensor ref = Tensor::Empty({9, 1000}, DType::kF32).value();
  ASSERT_TRUE(AddRmsNorm(ref_res, delta, w, 1e-5f, ref).ok());
  Tensor res = ToCuda(residual), out = PoisonedCuda({9, 1000});
  ASSERT_TRUE(AddRmsNorm(res, ToCuda(delta), ToCuda(w), 1e-5f, out).ok());
  EXPECT_LT(RelativeError(ToHost(res), ref_res), 1e-6);
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);
}

TEST_F(CudaElementwiseTest, AddRmsNormWithOutAliasingDelta) {
  const Tensor residual = RandomTensor({3, 300}, 8), delta = RandomTensor({3, 300}, 9);
  const Tensor w = RandomTensor({300}, 10);
  Tensor ref_res = residual.Clone().value(), ref = delta.Clone().value();
  ASSERT_TRUE(AddRmsNorm(ref_res, ref, w, 1e-5f, ref).ok());
  Tensor res = ToCuda(residual), d = ToCuda(delta);
  ASSERT_TRUE(AddRmsNorm(res, d, ToCuda(w), 1e-5f, d).ok());
  EXPECT_LT(RelativeError(ToHost(d), ref), 1e-5);
}

TEST_F(CudaElementwiseTest, SiluAndMulMatchesCpu) {
  const Tensor gu = RandomTensor({7, 2 * 333}, 11, -6.0f, 6.0f);
  Tensor ref = Tensor::Empty({7, 333}, DType::kF32).value();
  ASSERT_TRUE(SiluAndMul(gu, ref).ok());
  Tensor out = PoisonedCuda({7, 333});
  ASSERT_TRUE(SiluAndMul(ToCuda(gu), out).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);
}

TEST_F(CudaElementwiseTest, ClampedSwiGluMatchesCpu) {
  const Tensor gu = RandomTensor({5, 2 * 200}, 12, -12.0f, 12.0f);  // beyond the limit of 7
  Tensor ref = Tensor::Empty({5, 200}, DType::kF32).value();
  ASSERT_TRUE(ClampedSwiGlu(gu, 1.702f, 7.0f, ref).ok());
  Tensor out = PoisonedCuda({5, 200});
  ASSERT_TRUE(ClampedSwiGlu(ToCuda(gu), 1.702f, 7.0f, out).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);
}

TEST_F(CudaElementwiseTest, SoftmaxMatchesCpuOnShortAndVocabSizedRows) {
  for (int64_t cols : {3, 64, 151936}) {
    const Tensor x = RandomTensor({4, cols}, 13, -20.0f, 20.0f);
    Tensor ref = x.Clone().value();
    ASSERT_TRUE(Softmax(ref).ok());
    Tensor d = ToCuda(x);
    ASSERT_TRUE(Softmax(d).ok());
    EXPECT_LT(RelativeError(ToHost(d), ref), 1e-5) << cols;
  }
}

TEST_F(CudaElementwiseTest, EmbeddingGathersEveryTableDtype) {
  const std::vector<int32_t> ids = {0, 99, 5, 42, 42, 7};
  const Tensor id_t = Tensor::FromVector(absl::MakeConstSpan(ids), {6});
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const Tensor table = RandomTensor({100, 96}, 14).To(dtype).value();
    Tensor ref = Tensor::Empty({6, 96}, DType::kF32).value();
    ASSERT_TRUE(Embedding(table, id_t, 0, 100, ref).ok());
    Tensor out = PoisonedCuda({6, 96});
    ASSERT_TRUE(Embedding(ToCuda(table), ToCuda(id_t), 0, 100, out).ok());
    EXPECT_EQ(RelativeError(ToHost(out), ref), 0.0) << DTypeName(dtype);
  }
}

TEST_F(CudaElementwiseTest, EmbeddingShardGivesZerosOutsideItsRows) {
  const std::vector<int32_t> ids = {10, 49, 50, 74, 75, 199};
  const Tensor id_t = Tensor::FromVector(absl::MakeConstSpan(ids), {6});
  const Tensor table = RandomTensor({25, 16}, 15);  // rows of vocab [50, 75)
  Tensor ref = Tensor::Empty({6, 16}, DType::kF32).value();
  ASSERT_TRUE(Embedding(table, id_t, 50, 200, ref).ok());
  Tensor out = PoisonedCuda({6, 16});
  ASSERT_TRUE(Embedding(ToCuda(table), ToCuda(id_t), 50, 200, out).ok());
  EXPECT_EQ(RelativeError(ToHost(out), ref), 0.0);
}

TEST_F(CudaElementwiseTest, AxpyMatchesCpu) {
  const Tensor x = RandomTensor({6, 77}, 16), o = RandomTensor({6, 77}, 17);
  Tensor ref = o.Clone().value();
  ASSERT_TRUE(Axpy(0.37f, x, ref).ok());
  Tensor d = ToCuda(o);
  ASSERT_TRUE(Axpy(0.37f, ToCuda(x), d).ok());
  EXPECT_LT(RelativeError(ToHost(d), ref), 1e-6);
}

struct RopeCase {
  std::string name;
  RopeConfig config;
  bool i64_positions = false;
};

class CudaRopeTest : public testing::CudaKernelParamTest<RopeCase> {};

TEST_P(CudaRopeTest, MatchesCpu) {
  const RopeCase& c = GetParam();
  absl::StatusOr<RopeCache> cache = RopeCache::Create(c.config);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const int64_t tokens = 11, heads = 3, d = c.config.head_dim;
  std::vector<int64_t> pos64;
  std::vector<int32_t> pos32;
  for (int64_t t = 0; t < tokens; ++t) {
    pos64.push_back((t * 977) % c.config.max_position);
    pos32.push_back(static_cast<int32_t>(pos64.back()));
  }
  const Tensor positions = c.i64_positions
                               ? Tensor::FromVector(absl::MakeConstSpan(pos64), {tokens})
                               : Tensor::FromVector(absl::MakeConstSpan(pos32), {tokens});
  // x is a view into a wider fused buffer (token stride 5 * d).
  const Tensor buf = RandomTensor({tokens, 5 * d}, 18);
  Tensor ref_buf = buf.Clone().value();
  Tensor ref = ref_buf.Slice(1, 0, heads * d).AsStrided({tokens, heads, d}, {5 * d, d, 1});
  ASSERT_TRUE(ApplyRope(*cache, positions, ref).ok());
  Tensor dev_buf = ToCuda(buf);
  Tensor x = dev_buf.AsStrided({tokens, heads, d}, {5 * d, d, 1});
  const absl::Status s = ApplyRope(*cache, ToCuda(positions), x);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_LT(RelativeError(ToHost(dev_buf), ref_buf), 1e-6);
}

RopeConfig Rope(int head_dim, int rotary_dim, bool neox) {
  RopeConfig c;
  c.head_dim = head_dim;
  c.rotary_dim = rotary_dim;
  c.neox_style = neox;
  c.theta = 1e6;
  c.max_position = 8192;
  return c;
}

std::vector<RopeCase> RopeCases() {
  std::vector<RopeCase> cases;
  cases.push_back({"neox", Rope(128, 0, true)});
  cases.push_back({"gptj", Rope(64, 0, false)});
  cases.push_back({"partial_neox", Rope(128, 64, true)});
  cases.push_back({"partial_gptj_i64", Rope(64, 32, false), true});
  RopeConfig linear = Rope(64, 0, true);
  linear.scaling = RopeConfig::Scaling::kLinear;
  linear.factor = 4.0;
  cases.push_back({"linear", linear});
  RopeConfig yarn = Rope(64, 0, true);  // gpt-oss style
  yarn.scaling = RopeConfig::Scaling::kYarn;
  yarn.factor = 32.0;
  yarn.original_max_position = 4096;
  yarn.truncate = false;
  yarn.theta = 150000;
  cases.push_back({"yarn_gpt_oss", yarn});
  RopeConfig ds = Rope(64, 0, false);  // DeepSeek-V3 style
  ds.scaling = RopeConfig::Scaling::kYarn;
  ds.factor = 40.0;
  ds.original_max_position = 4096;
  ds.mscale = 1.0;
  ds.mscale_all_dim = 1.0;
  cases.push_back({"yarn_deepseek", ds});
  RopeConfig llama3 = Rope(128, 0, true);
  llama3.scaling = RopeConfig::Scaling::kLlama3;
  llama3.factor = 8.0;
  llama3.original_max_position = 8192;
  cases.push_back({"llama3", llama3});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaRopeTest, ::testing::ValuesIn(RopeCases()),
                         [](const ::testing::TestParamInfo<RopeCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace tessera
