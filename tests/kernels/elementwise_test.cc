// Tests of the normalisation and elementwise operations of kernels/ops.h against the plain
// references in tessera::ref and hand-computed values, on both the AVX-512 and portable paths.

#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/reference_elementwise.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::testing::HasSubstr;

// A tensor that claims to live on cuda:0 (host memory wrapped with a CUDA device tag), to check
// the device dispatch without a GPU. Never dereferenced by the code under test.
Tensor FakeCudaTensor(std::initializer_list<int64_t> shape, DType dtype) {
  auto storage = std::make_shared<std::vector<char>>(NumElements(shape) * DTypeSize(dtype) + 64);
  return *Tensor::FromBuffer(WrapBuffer(storage->data(), storage->size(), Device::Cuda(0), storage),
                             0, shape, dtype);
}

Tensor Clone(const Tensor& t) { return *t.Clone(); }
Tensor Empty(std::initializer_list<int64_t> shape) { return *Tensor::Empty(shape, DType::kF32); }
std::vector<float> Values(const Tensor& t) {
  Tensor c = *t.Clone();
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

// Restores the AVX-512 switch after each test.
class IsaGuard {
 public:
  explicit IsaGuard(bool avx512) { cpu::SetAvx512EnabledForTesting(avx512); }
  ~IsaGuard() { cpu::SetAvx512EnabledForTesting(true); }
};

// ---- Sweeps over (rows, hidden, avx512) --------------------------------------------------------

class RowOpTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {
 protected:
  int64_t rows() const { return std::get<0>(GetParam()); }
  int64_t hidden() const { return std::get<1>(GetParam()); }
  IsaGuard guard_{std::get<2>(GetParam())};
};

TEST_P(RowOpTest, RmsNormMatchesReference) {
  Tensor x = RandomTensor({rows(), hidden()}, 1, -3, 3);
  Tensor w = RandomTensor({hidden()}, 2, 0.5, 1.5);
  Tensor out = Empty({rows(), hidden()}), expected = Empty({rows(), hidden()});
  ASSERT_TRUE(RmsNorm(x, w, 1e-6f, out).ok());
  ASSERT_TRUE(ref::RmsNorm(x, w, 1e-6f, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-6);
}

TEST_P(RowOpTest, RmsNormInPlace) {
  Tensor x = RandomTensor({rows(), hidden()}, 3);
  Tensor w = RandomTensor({hidden()}, 4);
  Tensor expected = Empty({rows(), hidden()});
  ASSERT_TRUE(ref::RmsNorm(x, w, 1e-5f, expected).ok());
  ASSERT_TRUE(RmsNorm(x, w, 1e-5f, x).ok());
  EXPECT_LT(RelativeError(x, expected), 1e-6);
}

TEST_P(RowOpTest, AddRmsNormMatchesReference) {
  Tensor residual = RandomTensor({rows(), hidden()}, 5, -2, 2);
  Tensor delta = RandomTensor({rows(), hidden()}, 6, -2, 2);
  Tensor w = RandomTensor({hidden()}, 7);
  Tensor residual_ref = Clone(residual);
  Tensor out = Empty({rows(), hidden()}), expected = Empty({rows(), hidden()});
  ASSERT_TRUE(AddRmsNorm(residual, delta, w, 1e-6f, out).ok());
  ASSERT_TRUE(ref::AddRmsNorm(residual_ref, delta, w, 1e-6f, expected).ok());
  EXPECT_LT(RelativeError(residual, residual_ref), 1e-7);
  EXPECT_LT(RelativeError(out, expected), 1e-6);
}

TEST_P(RowOpTest, SiluAndMulMatchesReference) {
  Tensor gate_up = RandomTensor({rows(), 2 * hidden()}, 8, -12, 12);
  Tensor out = Empty({rows(), hidden()}), expected = Empty({rows(), hidden()});
  ASSERT_TRUE(SiluAndMul(gate_up, out).ok());
  ASSERT_TRUE(ref::SiluAndMul(gate_up, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-6);
}

TEST_P(RowOpTest, ClampedSwiGluMatchesReference) {
  Tensor gate_up = RandomTensor({rows(), 2 * hidden()}, 9, -10, 10);
  Tensor out = Empty({rows(), hidden()}), expected = Empty({rows(), hidden()});
  ASSERT_TRUE(ClampedSwiGlu(gate_up, 1.702f, 7.0f, out).ok());
  ASSERT_TRUE(ref::ClampedSwiGlu(gate_up, 1.702f, 7.0f, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-6);
}

TEST_P(RowOpTest, SoftmaxMatchesReference) {
  Tensor x = RandomTensor({rows(), hidden()}, 10, -20, 20);
  Tensor expected = Clone(x);
  ASSERT_TRUE(Softmax(x).ok());
  ASSERT_TRUE(ref::Softmax(expected).ok());
  EXPECT_LT(RelativeError(x, expected), 1e-6);
}

TEST_P(RowOpTest, AxpyMatchesReference) {
  Tensor x = RandomTensor({rows(), hidden()}, 11);
  Tensor out = RandomTensor({rows(), hidden()}, 12);
  Tensor expected = Clone(out);
  ASSERT_TRUE(Axpy(0.37f, x, out).ok());
  ASSERT_TRUE(ref::Axpy(0.37f, x, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Sizes, RowOpTest,
                         ::testing::Combine(::testing::Values<int64_t>(1, 3, 37, 300),
                                            ::testing::Values<int64_t>(1, 7, 129, 1000),
                                            ::testing::Bool()));

// ---- RmsNorm -----------------------------------------------------------------------------------

TEST(RmsNormTest, HandComputedValues) {
  Tensor x = Tensor::FromVector(std::vector<float>{1, 2, 3}, {1, 3});
  Tensor w = Tensor::FromVector(std::vector<float>{1, 1, 2}, {3});
  Tensor out = Empty({1, 3});
  ASSERT_TRUE(RmsNorm(x, w, 0.0f, out).ok());
  const double inv = 1.0 / std::sqrt(14.0 / 3.0);
  EXPECT_THAT(Values(out), ::testing::ElementsAre(::testing::FloatNear(1 * inv, 1e-6),
                                                  ::testing::FloatNear(2 * inv, 1e-6),
                                                  ::testing::FloatNear(6 * inv, 1e-6)));
}

TEST(RmsNormTest, EpsilonEntersUnderTheRoot) {
  Tensor x = Tensor::FromVector(std::vector<float>{0.5f, -0.5f}, {1, 2});
  Tensor w = Tensor::FromVector(std::vector<float>{1, 1}, {2});
  Tensor out = Empty({1, 2});
  ASSERT_TRUE(RmsNorm(x, w, 0.75f, out).ok());  // 1 / sqrt(0.25 + 0.75) = 1
  EXPECT_THAT(Values(out),
              ::testing::ElementsAre(::testing::FloatEq(0.5f), ::testing::FloatEq(-0.5f)));
}

TEST(RmsNormTest, PerHeadViewIntoFusedBuffer) {
  // q/k norm on a strided [num_tokens, num_heads, head_dim] view of a fused qkv buffer.
  const int64_t tokens = 5, heads = 3, head_dim = 24, fused = (heads + 4) * head_dim;
  Tensor qkv = RandomTensor({tokens, fused}, 13);
  Tensor untouched = Clone(qkv);
  Tensor q =
      qkv.Slice(1, 0, heads * head_dim).AsStrided({tokens, heads, head_dim}, {fused, head_dim, 1});
  Tensor w = RandomTensor({head_dim}, 14);
  Tensor expected = Empty({tokens * heads, head_dim});
  Tensor q_copy = *q.Clone();
  ASSERT_TRUE(ref::RmsNorm(q_copy.View({tokens * heads, head_dim}), w, 1e-6f, expected).ok());
  ASSERT_TRUE(RmsNorm(q, w, 1e-6f, q).ok());
  EXPECT_LT(RelativeError(q.Clone()->View({tokens * heads, head_dim}), expected), 1e-6);
  // The k/v part of the buffer is not written.
  EXPECT_EQ(RelativeError(qkv.Slice(1, heads * head_dim, fused),
                          untouched.Slice(1, heads * head_dim, fused)),
            0.0);
}

TEST(RmsNormTest, NanPropagates) {
  Tensor x = RandomTensor({2, 33}, 15);
  x.data<float>()[40] = std::numeric_limits<float>::quiet_NaN();
  Tensor w = RandomTensor({33}, 16);
  Tensor out = Empty({2, 33});
  ASSERT_TRUE(RmsNorm(x, w, 1e-6f, out).ok());
  EXPECT_TRUE(std::isnan(out.data<float>()[33 + 5]));
  EXPECT_FALSE(std::isnan(out.data<float>()[5]));
}

TEST(RmsNormTest, RejectsWrongWeightShape) {
  Tensor x = RandomTensor({2, 8}, 17), w = RandomTensor({7}, 18), out = Empty({2, 8});
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("weight"));
}

TEST(RmsNormTest, RejectsOutShapeMismatch) {
  Tensor x = RandomTensor({2, 8}, 17), w = RandomTensor({8}, 18), out = Empty({3, 8});
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out"));
}

TEST(RmsNormTest, RejectsNonF32Input) {
  Tensor x = *Tensor::Zeros({2, 8}, DType::kBF16), w = RandomTensor({8}, 18), out = Empty({2, 8});
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("x must be f32"));
}

TEST(RmsNormTest, RejectsStridedLastDimension) {
  Tensor base = RandomTensor({4, 16}, 19);
  Tensor x = base.AsStrided({4, 8}, {16, 2});
  Tensor w = RandomTensor({8}, 18), out = Empty({4, 8});
  EXPECT_EQ(RmsNorm(x, w, 1e-6f, out).code(), absl::StatusCode::kInvalidArgument);
}

// ---- AddRmsNorm --------------------------------------------------------------------------------

TEST(AddRmsNormTest, HandComputedValues) {
  Tensor residual = Tensor::FromVector(std::vector<float>{1, 1}, {1, 2});
  Tensor delta = Tensor::FromVector(std::vector<float>{2, -5}, {1, 2});
  Tensor w = Tensor::FromVector(std::vector<float>{1, 3}, {2});
  Tensor out = Empty({1, 2});
  ASSERT_TRUE(AddRmsNorm(residual, delta, w, 0.0f, out).ok());
  EXPECT_THAT(Values(residual), ::testing::ElementsAre(3.0f, -4.0f));
  const double inv = 1.0 / std::sqrt(25.0 / 2.0);
  EXPECT_THAT(Values(out), ::testing::ElementsAre(::testing::FloatNear(3 * inv, 1e-6),
                                                  ::testing::FloatNear(-12 * inv, 1e-6)));
}

TEST(AddRmsNormTest, OutMayAliasDelta) {
  Tensor residual = RandomTensor({9, 129}, 23), delta = RandomTensor({9, 129}, 24);
  Tensor w = RandomTensor({129}, 25);
  Tensor residual_ref = Clone(residual), expected = Empty({9, 129});
  ASSERT_TRUE(ref::AddRmsNorm(residual_ref, delta, w, 1e-6f, expected).ok());
  ASSERT_TRUE(AddRmsNorm(residual, delta, w, 1e-6f, delta).ok());
  EXPECT_LT(RelativeError(residual, residual_ref), 1e-7);
  EXPECT_LT(RelativeError(delta, expected), 1e-6);
}

TEST(AddRmsNormTest, RejectsDeltaShapeMismatch) {
  Tensor residual = RandomTensor({2, 8}, 1), delta = RandomTensor({2, 9}, 2);
  Tensor w = RandomTensor({8}, 3), out = Empty({2, 8});
  absl::Status s = AddRmsNorm(residual, delta, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("delta"));
}

// ---- Activations -------------------------------------------------------------------------------

TEST(SiluAndMulTest, HandComputedValues) {
  // gate = [1, -2], up = [2, 3]
  Tensor gate_up = Tensor::FromVector(std::vector<float>{1, -2, 2, 3}, {1, 4});
  Tensor out = Empty({1, 2});
  ASSERT_TRUE(SiluAndMul(gate_up, out).ok());
  const double s1 = 1.0 / (1.0 + std::exp(-1.0)), s2 = -2.0 / (1.0 + std::exp(2.0));
  EXPECT_THAT(Values(out), ::testing::ElementsAre(::testing::FloatNear(s1 * 2, 1e-6),
                                                  ::testing::FloatNear(s2 * 3, 1e-6)));
}

TEST(SiluAndMulTest, ExtremeGatesStayFinite) {
  for (bool avx512 : {true, false}) {
    IsaGuard guard(avx512);
    Tensor gate_up = Tensor::FromVector(std::vector<float>{-200, 200, -1e30f, 1, 1, 1}, {1, 6});
    Tensor out = Empty({1, 3});
    ASSERT_TRUE(SiluAndMul(gate_up, out).ok());
    std::vector<float> v = Values(out);
    EXPECT_EQ(v[0], 0.0f);
    EXPECT_FLOAT_EQ(v[1], 200.0f);
    EXPECT_EQ(v[2], 0.0f);
  }
}

TEST(SiluAndMulTest, RejectsWrongOutWidth) {
  Tensor gate_up = RandomTensor({2, 10}, 1);
  Tensor out = Empty({2, 4});
  absl::Status s = SiluAndMul(gate_up, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out"));
}

TEST(SiluAndMulTest, RejectsOddGateUpWidth) {
  Tensor gate_up = RandomTensor({2, 9}, 1);
  Tensor out = Empty({2, 4});
  absl::Status s = SiluAndMul(gate_up, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("gate_up"));
}

TEST(ClampedSwiGluTest, HandComputedValuesWithClamping) {
  // Interleaved pairs (gate, up): (1, 2), (10, -9), (-3, 8).
  const float alpha = 1.702f, limit = 7.0f;
  Tensor gate_up = Tensor::FromVector(std::vector<float>{1, 2, 10, -9, -3, 8}, {1, 6});
  Tensor out = Empty({1, 3});
  ASSERT_TRUE(ClampedSwiGlu(gate_up, alpha, limit, out).ok());
  auto glu = [&](double g) { return g / (1.0 + std::exp(-g * alpha)); };
  EXPECT_THAT(Values(out), ::testing::ElementsAre(::testing::FloatNear((2 + 1) * glu(1), 1e-5),
                                                  ::testing::FloatNear((-7 + 1) * glu(7), 1e-5),
                                                  ::testing::FloatNear((7 + 1) * glu(-3), 1e-5)));
}

TEST(ClampedSwiGluTest, NanIsNotClampedAway) {
  for (bool avx512 : {true, false}) {
    IsaGuard guard(avx512);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Tensor gate_up = Tensor::FromVector(std::vector<float>{nan, 1, 1, nan, 1, 1}, {1, 6});
    Tensor out = Empty({1, 3});
    ASSERT_TRUE(ClampedSwiGlu(gate_up, 1.702f, 7.0f, out).ok());
    std::vector<float> v = Values(out);
    EXPECT_TRUE(std::isnan(v[0]));
    EXPECT_TRUE(std::isnan(v[1]));
    EXPECT_FALSE(std::isnan(v[2]));
  }
}

// ---- Softmax -----------------------------------------------------------------------------------

TEST(SoftmaxTest, RowsSumToOneAndMaskedEntriesAreZero) {
  for (bool avx512 : {true, false}) {
    IsaGuard guard(avx512);
    const float inf = std::numeric_limits<float>::infinity();
    Tensor x =
        Tensor::FromVector(std::vector<float>{0, std::log(3.0f), -inf, 1000, 1000, -inf}, {2, 3});
    ASSERT_TRUE(Softmax(x).ok());
    EXPECT_THAT(Values(x), ::testing::ElementsAre(::testing::FloatNear(0.25f, 1e-6),
                                                  ::testing::FloatNear(0.75f, 1e-6), 0.0f,
                                                  ::testing::FloatNear(0.5f, 1e-6),
                                                  ::testing::FloatNear(0.5f, 1e-6), 0.0f));
  }
}

TEST(SoftmaxTest, RejectsIntegerTensor) {
  Tensor x = *Tensor::Zeros({2, 3}, DType::kI32);
  EXPECT_EQ(Softmax(x).code(), absl::StatusCode::kInvalidArgument);
}

// ---- Embedding ---------------------------------------------------------------------------------

TEST(EmbeddingTest, VocabShardWithOffset) {
  // This rank holds rows [10, 14) of a 20-token vocabulary.
  Tensor table = RandomTensor({4, 5}, 20);
  Tensor ids = Tensor::FromVector(std::vector<int32_t>{10, 13, 3, 14, 11}, {5});
  Tensor out = Empty({5, 5}), expected = Empty({5, 5});
  ASSERT_TRUE(Embedding(table, ids, 10, 20, out).ok());
  ASSERT_TRUE(ref::Embedding(table, ids, 10, 20, expected).ok());
  EXPECT_EQ(RelativeError(out, expected), 0.0);
  std::vector<float> v = Values(out), t = Values(table);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(v[0 * 5 + i], t[0 * 5 + i]);
    EXPECT_EQ(v[1 * 5 + i], t[3 * 5 + i]);
    EXPECT_EQ(v[2 * 5 + i], 0.0f);  // below the shard
    EXPECT_EQ(v[3 * 5 + i], 0.0f);  // above the shard
    EXPECT_EQ(v[4 * 5 + i], t[1 * 5 + i]);
  }
}

TEST(EmbeddingTest, Bf16TableIsConverted) {
  Tensor table_f32 = RandomTensor({6, 9}, 21);
  Tensor table = *table_f32.To(DType::kBF16);
  Tensor ids = Tensor::FromVector(std::vector<int32_t>{5, 0, 2}, {3});
  Tensor out = Empty({3, 9}), expected = Empty({3, 9});
  ASSERT_TRUE(Embedding(table, ids, 0, 0, out).ok());
  ASSERT_TRUE(ref::Embedding(table, ids, 0, 0, expected).ok());
  EXPECT_EQ(RelativeError(out, expected), 0.0);
  EXPECT_EQ(out.data<float>()[0], Bf16ToFloat(FloatToBf16(table_f32.data<float>()[5 * 9])));
}

TEST(EmbeddingTest, InvalidIdIsAnError) {
  Tensor table = RandomTensor({4, 5}, 22);
  Tensor out = Empty({2, 5});
  for (int32_t bad : {-1, 20}) {
    Tensor ids = Tensor::FromVector(std::vector<int32_t>{1, bad}, {2});
    absl::Status s = Embedding(table, ids, 0, 20, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("ids[1]"));
  }
}

TEST(EmbeddingTest, RejectsWrongOutShape) {
  Tensor table = RandomTensor({4, 5}, 22);
  Tensor ids = Tensor::FromVector(std::vector<int32_t>{1, 2}, {2});
  Tensor out = Empty({2, 6});
  absl::Status s = Embedding(table, ids, 0, 4, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out"));
}

// ---- Axpy --------------------------------------------------------------------------------------

TEST(AxpyTest, HandComputedValues) {
  Tensor x = Tensor::FromVector(std::vector<float>{1, 2, 3}, {3});
  Tensor out = Tensor::FromVector(std::vector<float>{10, 20, 30}, {3});
  ASSERT_TRUE(Axpy(0.5f, x, out).ok());
  EXPECT_THAT(Values(out), ::testing::ElementsAre(10.5f, 21.0f, 31.5f));
}

TEST(AxpyTest, RejectsShapeMismatch) {
  Tensor x = RandomTensor({3, 4}, 1), out = RandomTensor({4, 3}, 2);
  absl::Status s = Axpy(1.0f, x, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("x"));
}

TEST(DeviceDispatchTest, CudaTensorsAreUnimplementedOnThisBackend) {
  // In CUDA builds these tensors go to kernels/cuda (tests/kernels/*_cuda_test.cc); the fake
  // device tensors here are host memory and must not reach a real kernel.
  if (BuiltWithCuda()) GTEST_SKIP() << "CUDA build: device tensors are served by kernels/cuda";
  Tensor x = FakeCudaTensor({2, 8}, DType::kF32), w = FakeCudaTensor({8}, DType::kF32);
  Tensor out = FakeCudaTensor({2, 8}, DType::kF32);
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CUDA"));
  EXPECT_EQ(Softmax(x).code(), absl::StatusCode::kUnimplemented);
  Tensor gate_up = FakeCudaTensor({2, 16}, DType::kF32);
  EXPECT_EQ(SiluAndMul(gate_up, out).code(), absl::StatusCode::kUnimplemented);
}

TEST(DeviceDispatchTest, CudaBuildWithoutADeviceFailsCleanly) {
  // The dispatch reaches the CUDA backend, which names the missing device instead of launching.
  if (!BuiltWithCuda() || CudaDeviceCount() > 0) GTEST_SKIP() << "needs a CUDA build, no GPU";
  Tensor x = FakeCudaTensor({2, 8}, DType::kF32), w = FakeCudaTensor({8}, DType::kF32);
  Tensor out = FakeCudaTensor({2, 8}, DType::kF32);
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("cuda:0"));
  Tensor gate_up = FakeCudaTensor({2, 16}, DType::kF32);
  EXPECT_FALSE(SiluAndMul(gate_up, out).ok());
}

TEST(DeviceDispatchTest, MixedDevicesAreInvalid) {
  Tensor x = RandomTensor({2, 8}, 1), w = RandomTensor({8}, 2);
  Tensor out = FakeCudaTensor({2, 8}, DType::kF32);
  absl::Status s = RmsNorm(x, w, 1e-6f, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out"));
}

}  // namespace
}  // namespace tessera
