// CUDA Linear (kernels/cuda/linear.cu) against the CPU Linear on the same weights: every weight
// dtype, the GEMV path (m <= 8) and the cuBLASLt path, bias, strided x, fp8 block scales with n
// and k not multiples of 128. Skips without a CUDA device.
#include <tuple>

#include "absl/strings/str_cat.h"
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

LinearWeight MakeWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  LinearWeight w;
  if (dtype == DType::kF8E4M3) {
    w.weight = RandomTensor({n, k}, seed, -400.0f, 400.0f).To(dtype).value();
    w.scale_inv = RandomTensor({(n + 127) / 128, (k + 127) / 128}, seed + 1, 1e-3f, 4e-3f);
  } else {
    w.weight = RandomTensor({n, k}, seed).To(dtype).value();
  }
  return w;
}

LinearWeight ToCuda(const LinearWeight& w) {
  LinearWeight d = w;
  d.weight = testing::ToCuda(w.weight);
  d.scale_inv = testing::ToCuda(w.scale_inv);
  return d;
}

// Tolerance: the GEMV path keeps x in f32 (only summation order differs); the GEMM path rounds x
// (and fp8 weights) to bf16/f16, f32 weights stay f32.
double Tolerance(DType dtype, int64_t m) {
  if (m <= 8 || dtype == DType::kF32) return 1e-5;
  return 1e-2;
}

using LinearParam = std::tuple<DType, int64_t /*m*/, bool /*bias*/>;

class CudaLinearTest : public testing::CudaKernelParamTest<LinearParam> {};

TEST_P(CudaLinearTest, MatchesCpu) {
  const auto [dtype, m, with_bias] = GetParam();
  const int64_t n = 300, k = 520;  // not multiples of 128 (fp8 partial blocks)
  const LinearWeight w = MakeWeight(dtype, n, k, 3);
  const Tensor x = RandomTensor({m, k}, 4);
  const Tensor bias = with_bias ? RandomTensor({n}, 5) : Tensor();
  Tensor ref = Tensor::Empty({m, n}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, bias, ref).ok());
  Tensor out = PoisonedCuda({m, n});
  const absl::Status s = Linear(ToCuda(x), ToCuda(w), ToCuda(bias), out);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_LT(RelativeError(ToHost(out), ref), Tolerance(dtype, m));
}

INSTANTIATE_TEST_SUITE_P(
    DtypesAndRows, CudaLinearTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3),
                       ::testing::Values(1, 3, 8, 9, 70), ::testing::Bool()),
    [](const ::testing::TestParamInfo<LinearParam>& info) {
      return absl::StrCat(DTypeName(std::get<0>(info.param)), "_m", std::get<1>(info.param),
                          std::get<2>(info.param) ? "_bias" : "");
    });

class CudaLinearShapes : public testing::CudaKernelTest {};

TEST_F(CudaLinearShapes, OddInFeaturesTakeTheScalarGemvPath) {
  const LinearWeight w = MakeWeight(DType::kBF16, 33, 37, 8);
  const Tensor x = RandomTensor({2, 37}, 9);
  Tensor ref = Tensor::Empty({2, 33}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, Tensor(), ref).ok());
  Tensor out = PoisonedCuda({2, 33});
  ASSERT_TRUE(Linear(ToCuda(x), ToCuda(w), Tensor(), out).ok());
  EXPECT_LT(RelativeError(ToHost(out), ref), 1e-5);
}

TEST_F(CudaLinearShapes, StridedRowsOfXAreRead) {
  const LinearWeight w = MakeWeight(DType::kBF16, 64, 128, 10);
  for (int64_t m : {4, 40}) {
    const Tensor wide = RandomTensor({m, 192}, 11);
    const Tensor x = wide.Slice(1, 0, 128);  // row stride 192
    Tensor ref = Tensor::Empty({m, 64}, DType::kF32).value();
    ASSERT_TRUE(Linear(x, w, Tensor(), ref).ok());
    const Tensor wide_dev = ToCuda(wide);
    Tensor out = PoisonedCuda({m, 64});
    ASSERT_TRUE(Linear(wide_dev.Slice(1, 0, 128), ToCuda(w), Tensor(), out).ok());
    EXPECT_LT(RelativeError(ToHost(out), ref), m <= 8 ? 1e-5 : 1e-2) << "m=" << m;
  }
}

TEST_F(CudaLinearShapes, MixedDevicesAreInvalidArgument) {
  const LinearWeight w = MakeWeight(DType::kF32, 8, 16, 12);
  Tensor out = PoisonedCuda({1, 8});
  const absl::Status s = Linear(ToCuda(RandomTensor({1, 16}, 13)), w, Tensor(), out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(CudaLinearShapes, GroupMatchesSeparateCalls) {
  const LinearWeight w1 = MakeWeight(DType::kBF16, 48, 64, 14), w2 = MakeWeight(DType::kF16, 24, 32, 15);
  const Tensor x1 = RandomTensor({2, 64}, 16), x2 = RandomTensor({20, 32}, 17);
  Tensor r1 = Tensor::Empty({2, 48}, DType::kF32).value();
  Tensor r2 = Tensor::Empty({20, 24}, DType::kF32).value();
  ASSERT_TRUE(Linear(x1, w1, Tensor(), r1).ok());
  ASSERT_TRUE(Linear(x2, w2, Tensor(), r2).ok());
  const LinearWeight d1 = ToCuda(w1), d2 = ToCuda(w2);
  const Tensor dx1 = ToCuda(x1), dx2 = ToCuda(x2);
  Tensor o1 = PoisonedCuda({2, 48}), o2 = PoisonedCuda({20, 24});
  const LinearProblem problems[] = {{&dx1, &d1, nullptr, &o1}, {&dx2, &d2, nullptr, &o2}};
  ASSERT_TRUE(LinearGroup(problems).ok());
  EXPECT_LT(RelativeError(ToHost(o1), r1), 1e-5);
  EXPECT_LT(RelativeError(ToHost(o2), r2), 1e-2);
}

}  // namespace
}  // namespace tessera
