// Tests for tessera::Linear (kernels/ops_linear.cc, kernels/cpu/linear*): every weight dtype on
// every ISA path this machine has (forced with cpu::SetIsaOverride), odd shapes covering both the
// GEMV (m <= 8) and the GEMM path, bias, strided rows of x, fp8 block scales with n and k not
// multiples of the block, and the validation errors. Each case compares against the
// double-accumulating tessera::ref::Linear on the same (quantised) weights.
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/base/dtype.h"
#include "kernels/base/tensor.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/reference_linear.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using cpu::Isa;
using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;

// Restores the default ISA when a test ends.
class IsaScope {
 public:
  explicit IsaScope(Isa isa) { cpu::SetIsaOverride(isa); }
  ~IsaScope() { cpu::SetIsaOverride(std::nullopt); }
};

bool IsaAvailable(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(cpu::BestSupportedIsa()); }

// A random [n, k] weight of `dtype`; fp8 weights get a random [ceil(n/128), ceil(k/128)] scale.
LinearWeight MakeWeight(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  LinearWeight w;
  if (dtype == DType::kF8E4M3) {
    Tensor f = RandomTensor({n, k}, seed, -400.0f, 400.0f);
    w.weight = f.To(dtype).value();
    const int64_t sn = (n + 127) / 128, sk = (k + 127) / 128;
    w.scale_inv = RandomTensor({sn, sk}, seed + 1, 1e-3f, 4e-3f);
  } else {
    w.weight = RandomTensor({n, k}, seed).To(dtype).value();
  }
  return w;
}

struct Shape3 {
  int64_t m, n, k;
};

using LinearParam = std::tuple<DType, Isa, int64_t /*m*/, std::pair<int64_t, int64_t> /*n, k*/>;

class LinearSweepTest : public ::testing::TestWithParam<LinearParam> {};

TEST_P(LinearSweepTest, MatchesReference) {
  const auto [dtype, isa, m, nk] = GetParam();
  const auto [n, k] = nk;
  if (!IsaAvailable(isa)) GTEST_SKIP() << cpu::IsaName(isa) << " not supported on this CPU";
  IsaScope scope(isa);
  const uint64_t seed = static_cast<uint64_t>(m * 1000003 + n * 1009 + k);
  const LinearWeight w = MakeWeight(dtype, n, k, seed);
  // Strided rows: x is a view of the first k columns of [m, k + 5].
  const Tensor x_full = RandomTensor({m, k + 5}, seed + 7);
  const Tensor x = x_full.Slice(1, 0, k);
  const Tensor bias = (m + n) % 2 == 0 ? RandomTensor({n}, seed + 9) : Tensor();
  Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
  Tensor expected = Tensor::Empty({m, n}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, bias, out).ok());
  ASSERT_TRUE(ref::Linear(x, w, bias, expected).ok());
  const double tol = dtype == DType::kF32 ? 1e-5 : 1e-3;
  EXPECT_LT(RelativeError(out, expected), tol)
      << DTypeName(dtype) << " " << cpu::IsaName(isa) << " m=" << m << " n=" << n << " k=" << k;
}

std::string ParamName(const ::testing::TestParamInfo<LinearParam>& info) {
  const auto [dtype, isa, m, nk] = info.param;
  return absl::StrCat(DTypeName(dtype), "_", cpu::IsaName(isa), "_m", m, "_n", nk.first, "_k",
                      nk.second);
}

INSTANTIATE_TEST_SUITE_P(
    AllDTypesIsasShapes, LinearSweepTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3),
                       ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                       ::testing::Values(1, 2, 3, 7, 33, 130),
                       ::testing::Values(std::make_pair<int64_t, int64_t>(1, 1),
                                         std::make_pair<int64_t, int64_t>(17, 129),
                                         std::make_pair<int64_t, int64_t>(129, 300),
                                         std::make_pair<int64_t, int64_t>(300, 17),
                                         std::make_pair<int64_t, int64_t>(300, 257))),
    ParamName);

// Every GEMV row count 1..8 and the first GEMM sizes, with a k long enough to use several
// GEMM k-blocks (k > 256) and several threads.
class LinearRowsTest : public ::testing::TestWithParam<std::tuple<Isa, int64_t>> {};

TEST_P(LinearRowsTest, BF16MatchesReferenceForEveryRowCount) {
  const auto [isa, m] = GetParam();
  if (!IsaAvailable(isa)) GTEST_SKIP() << cpu::IsaName(isa) << " not supported on this CPU";
  IsaScope scope(isa);
  const int64_t n = 95, k = 777;
  const LinearWeight w = MakeWeight(DType::kBF16, n, k, 42 + m);
  const Tensor x = RandomTensor({m, k}, 43 + m);
  const Tensor bias = RandomTensor({n}, 44);
  Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
  Tensor expected = Tensor::Empty({m, n}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, bias, out).ok());
  ASSERT_TRUE(ref::Linear(x, w, bias, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-3);
}

// Batched-decode sizes (kGemvMaxRows < m <= kSmallGemmMaxRows: GEMV over row chunks and L2
// column blocks) for every weight dtype, with a bias, n spanning several column blocks.
TEST(LinearSmallBatchTest, EveryDtypeMatchesReference) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    for (int64_t m : {int64_t{9}, int64_t{16}, int64_t{20}, cpu::kSmallGemmMaxRows}) {
      const int64_t n = 200, k = 1030;
      const LinearWeight w = MakeWeight(dt, n, k, 5 + m);
      const Tensor x = RandomTensor({m, k}, 6 + m);
      const Tensor bias = RandomTensor({n}, 7);
      Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
      Tensor expected = Tensor::Empty({m, n}, DType::kF32).value();
      ASSERT_TRUE(Linear(x, w, bias, out).ok());
      ASSERT_TRUE(ref::Linear(x, w, bias, expected).ok());
      EXPECT_LT(RelativeError(out, expected), 1e-5) << DTypeName(dt) << " m=" << m;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, LinearRowsTest,
                         ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2,
                                                              Isa::kAvx512),
                                            ::testing::Values<int64_t>(1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                       12, 16, 17, 24, 31, 32,
                                                                       33)));

// The opt-in AVX512_BF16 path (activations rounded to bf16, vdpbf16ps), decode GEMV (m <= 8) and
// prefill GEMM: bf16 error level.
class LinearBf16DotTest
    : public ::testing::TestWithParam<std::tuple<int64_t, std::pair<int64_t, int64_t>>> {};

TEST_P(LinearBf16DotTest, MatchesReferenceToBf16Precision) {
  const auto [m, nk] = GetParam();
  const auto [n, k] = nk;
  if (!cpu::HasAvx512Bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  IsaScope scope(Isa::kAvx512);
  cpu::SetBf16DotGemm(true);
  const LinearWeight w = MakeWeight(DType::kBF16, n, k, 11 + m);
  const Tensor x = RandomTensor({m, k + 3}, 12 + m).Slice(1, 0, k);
  const Tensor bias = RandomTensor({n}, 13);
  Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
  Tensor expected = Tensor::Empty({m, n}, DType::kF32).value();
  const absl::Status st = Linear(x, w, bias, out);
  cpu::SetBf16DotGemm(false);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(ref::Linear(x, w, bias, expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearBf16DotTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 24, 32, 33, 130),
                       ::testing::Values(std::make_pair<int64_t, int64_t>(1, 1),
                                         std::make_pair<int64_t, int64_t>(17, 129),
                                         std::make_pair<int64_t, int64_t>(300, 1025),
                                         std::make_pair<int64_t, int64_t>(129, 300))));

// fp8 with blocks that do not divide n or k and are not multiples of the vector width.
class LinearFp8BlockTest : public ::testing::TestWithParam<std::tuple<Isa, int64_t>> {};

TEST_P(LinearFp8BlockTest, OddBlockSizesMatchReference) {
  const auto [isa, m] = GetParam();
  if (!IsaAvailable(isa)) GTEST_SKIP() << cpu::IsaName(isa) << " not supported on this CPU";
  IsaScope scope(isa);
  const int64_t n = 70, k = 301;
  LinearWeight w;
  w.weight = RandomTensor({n, k}, 5, -448.0f, 448.0f).To(DType::kF8E4M3).value();
  w.block_n = 32;
  w.block_k = 37;
  w.scale_inv = RandomTensor({(n + 31) / 32, (k + 36) / 37}, 6, 0.5f, 2.0f);
  const Tensor x = RandomTensor({m, k}, 7);
  Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
  Tensor expected = Tensor::Empty({m, n}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, Tensor(), out).ok());
  ASSERT_TRUE(ref::Linear(x, w, Tensor(), expected).ok());
  EXPECT_LT(RelativeError(out, expected), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Blocks, LinearFp8BlockTest,
                         ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2,
                                                              Isa::kAvx512),
                                            ::testing::Values(1, 5, 40)));

// Every e4m3 code (normals, subnormals, both zeros) dequantised exactly: x is a one-hot row.
TEST(LinearFp8, EveryCodeDequantisesExactly) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!IsaAvailable(isa)) continue;
    IsaScope scope(isa);
    const int64_t n = 256, k = 33;
    Tensor wt = Tensor::Empty({n, k}, DType::kF8E4M3).value();
    uint8_t* wd = wt.data<uint8_t>();
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < k; ++c) wd[j * k + c] = static_cast<uint8_t>(c == 20 ? j : 0);
    }
    LinearWeight w;
    w.weight = wt;
    std::vector<float> xv(k, 0.0f);
    xv[20] = 1.0f;
    for (int64_t m : {1, 9}) {
      Tensor x = Tensor::Empty({m, k}, DType::kF32).value();
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t c = 0; c < k; ++c) x.data<float>()[i * k + c] = xv[c];
      }
      Tensor out = Tensor::Empty({m, n}, DType::kF32).value();
      ASSERT_TRUE(Linear(x, w, Tensor(), out).ok());
      for (int64_t j = 0; j < n; ++j) {
        const float want = F8E4M3ToFloat(static_cast<uint8_t>(j));
        const float got = out.data<float>()[(m - 1) * n + j];
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(got)) << cpu::IsaName(isa) << " code " << j;
        } else {
          EXPECT_EQ(got, want) << cpu::IsaName(isa) << " m=" << m << " code " << j;
        }
      }
    }
  }
}

// A NaN weight must make the output NaN (and the relative error infinite), never pass silently.
TEST(Linear, NaNWeightPropagates) {
  for (int64_t m : {1, 20}) {
    LinearWeight w;
    w.weight = RandomTensor({40, 50}, 3);
    w.weight.data<float>()[7 * 50 + 3] = std::numeric_limits<float>::quiet_NaN();
    const Tensor x = RandomTensor({m, 50}, 4);
    Tensor out = Tensor::Empty({m, 40}, DType::kF32).value();
    ASSERT_TRUE(Linear(x, w, Tensor(), out).ok());
    EXPECT_TRUE(std::isnan(out.data<float>()[7]));
    EXPECT_FALSE(std::isnan(out.data<float>()[8]));
  }
}

TEST(Linear, ZeroInFeaturesGivesBias) {
  LinearWeight w;
  w.weight = Tensor::Empty({3, 0}, DType::kBF16).value();
  const Tensor x = Tensor::Empty({2, 0}, DType::kF32).value();
  const Tensor bias = Tensor::FromVector(std::vector<float>{1, 2, 3}, {3});
  Tensor out = Tensor::Empty({2, 3}, DType::kF32).value();
  ASSERT_TRUE(Linear(x, w, bias, out).ok());
  EXPECT_EQ(out.data<float>()[4], 2.0f);
}

// ---- Validation ------------------------------------------------------------------------------------

class LinearErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w_.weight = RandomTensor({6, 10}, 1).To(DType::kBF16).value();
    x_ = RandomTensor({3, 10}, 2);
    out_ = Tensor::Empty({3, 6}, DType::kF32).value();
  }
  void ExpectInvalid(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out,
                     absl::string_view operand) {
    const absl::Status s = Linear(x, w, bias, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(operand), absl::string_view::npos) << s;
  }
  LinearWeight w_;
  Tensor x_, out_;
};

TEST_F(LinearErrorTest, UnsupportedWeightDType) {
  LinearWeight w;
  w.weight = Tensor::Zeros({6, 10}, DType::kI32).value();
  ExpectInvalid(x_, w, Tensor(), out_, "weight dtype i32");
}

TEST_F(LinearErrorTest, NonF32Input) {
  ExpectInvalid(x_.To(DType::kBF16).value(), w_, Tensor(), out_, "input x");
}

TEST_F(LinearErrorTest, MismatchedInFeatures) {
  ExpectInvalid(RandomTensor({3, 11}, 2), w_, Tensor(), out_, "in_features");
}

TEST_F(LinearErrorTest, WrongScaleShape) {
  LinearWeight w;
  w.weight = RandomTensor({200, 10}, 1).To(DType::kF8E4M3).value();
  w.scale_inv = RandomTensor({1, 1}, 2);  // needs [2, 1]
  Tensor out = Tensor::Empty({3, 200}, DType::kF32).value();
  ExpectInvalid(x_, w, Tensor(), out, "scale_inv");
}

TEST_F(LinearErrorTest, ScaleOnNonFp8Weight) {
  LinearWeight w = w_;
  w.scale_inv = RandomTensor({1, 1}, 2);
  ExpectInvalid(x_, w, Tensor(), out_, "scale_inv");
}

TEST_F(LinearErrorTest, WrongBiasShape) {
  ExpectInvalid(x_, w_, RandomTensor({5}, 3), out_, "bias");
}

TEST_F(LinearErrorTest, WrongOutputShape) {
  Tensor out = Tensor::Empty({3, 7}, DType::kF32).value();
  ExpectInvalid(x_, w_, Tensor(), out, "output out");
}

TEST_F(LinearErrorTest, NonContiguousInputRows) {
  const Tensor xt = RandomTensor({10, 3}, 2).AsStrided({3, 10}, {1, 3});
  ExpectInvalid(xt, w_, Tensor(), out_, "input x");
}

TEST_F(LinearErrorTest, ReferenceValidatesToo) {
  const absl::Status s = ref::Linear(RandomTensor({3, 11}, 2), w_, Tensor(), out_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// LinearGroup: a mix of decode-sized (grouped) and prefill-sized (run alone) problems of every
// weight dtype, with and without bias, gives exactly what Linear gives on each problem; with the
// opt-in bf16 dot-product path too (both then round x to bf16 the same way).
class LinearGroupTest : public ::testing::TestWithParam<bool> {};

TEST_P(LinearGroupTest, EqualsLinearOnEveryProblem) {
  const bool bf16_dot = GetParam();
  if (bf16_dot && !cpu::HasAvx512Bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  cpu::SetBf16DotGemm(bf16_dot);
  const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3};
  const Shape3 shapes[] = {{1, 768, 2048}, {1, 2048, 768}, {3, 100, 37},
                                        {8, 48, 300},   {17, 64, 96},   {1, 5, 1},
                                        {2, 1000, 130}, {0, 16, 16},   {12, 300, 130},
                                        {40, 64, 96},   {20, 100, 2100}};
  std::vector<Tensor> xs, biases, outs, refs;
  std::vector<LinearWeight> ws;
  const size_t count = std::size(shapes) * std::size(dtypes);
  xs.reserve(count);
  biases.reserve(count);
  outs.reserve(count);
  ws.reserve(count);
  std::vector<LinearProblem> problems;
  uint64_t seed = 100;
  for (const auto& s : shapes) {
    for (DType dt : dtypes) {
      xs.push_back(RandomTensor({s.m, s.k}, seed++));
      ws.push_back(MakeWeight(dt, s.n, s.k, seed++));
      biases.push_back(seed % 2 ? RandomTensor({s.n}, seed++) : Tensor());
      outs.push_back(Tensor::Empty({s.m, s.n}, DType::kF32).value());
      problems.push_back({&xs.back(), &ws.back(), biases.back().defined() ? &biases.back() : nullptr,
                          &outs.back()});
    }
  }
  ASSERT_TRUE(LinearGroup(problems).ok());
  for (size_t i = 0; i < problems.size(); ++i) {
    Tensor ref = Tensor::Empty(outs[i].shape(), DType::kF32).value();
    ASSERT_TRUE(Linear(xs[i], ws[i], biases[i], ref).ok());
    ASSERT_EQ(outs[i].numel(), ref.numel());
    const float* a = outs[i].data<float>();
    const float* b = ref.data<float>();
    for (int64_t j = 0; j < ref.numel(); ++j) {
      ASSERT_EQ(a[j], b[j]) << "problem " << i << " at " << j;
    }
  }
  cpu::SetBf16DotGemm(false);
}

INSTANTIATE_TEST_SUITE_P(Bf16Dot, LinearGroupTest, ::testing::Bool());

TEST(LinearGroupErrors, ErrorsNameTheProblem) {
  Tensor x = RandomTensor({1, 8}, 1);
  LinearWeight w = MakeWeight(DType::kF32, 4, 9, 2);
  Tensor out = Tensor::Empty({1, 4}, DType::kF32).value();
  LinearProblem p{&x, &w, nullptr, &out};
  absl::Status st = LinearGroup({p});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("problem 0"), std::string::npos) << st;
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// The public precision switch (--activation-dtype): parsing names the flag, bf16 actually
// changes the results of a bf16-weight Linear (when the CPU has the path) and a weight marked
// f32_input (router gates) still gives the f32 result bit for bit.
TEST(ActivationDTypeTest, ParsesAndNamesTheFlag) {
  EXPECT_EQ(ParseActivationDType("f32", "--activation-dtype").value(), ActivationDType::kF32);
  EXPECT_EQ(ParseActivationDType("bfloat16", "--x").value(), ActivationDType::kBF16);
  const absl::StatusOr<ActivationDType> bad = ParseActivationDType("fp16", "--worker-act");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::AllOf(::testing::HasSubstr("--worker-act 'fp16'"),
                               ::testing::HasSubstr("f32 or bf16")));
}

// An unset flag keeps what the process has (TESSERA_LINEAR_BF16_DOT=1 or SetActivationDType).
TEST(ActivationDTypeTest, EmptyFlagKeepsTheProcessSetting) {
  SetActivationDType(ActivationDType::kBF16);
  EXPECT_TRUE(ApplyActivationDTypeFlag("", "--activation-dtype").ok());
  EXPECT_EQ(GetActivationDType(), ActivationDType::kBF16);
  EXPECT_TRUE(ApplyActivationDTypeFlag("f32", "--activation-dtype").ok());
  EXPECT_EQ(GetActivationDType(), ActivationDType::kF32);
  const absl::Status bad = ApplyActivationDTypeFlag("half", "--activation-dtype");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetActivationDType(), ActivationDType::kF32);
}

TEST(ActivationDTypeTest, Bf16RoundsInputsExceptF32InputLayers) {
  if (!Bf16ActivationsSupported()) GTEST_SKIP() << "no AVX512_BF16 path on this CPU";
  for (int64_t m : {1, 4, 40}) {
    LinearWeight w = MakeWeight(DType::kBF16, 96, 256, 7 + m);
    const Tensor x = RandomTensor({m, 256}, 8 + m);
    Tensor exact = Tensor::Empty({m, 96}, DType::kF32).value();
    Tensor rounded = Tensor::Empty({m, 96}, DType::kF32).value();
    Tensor kept = Tensor::Empty({m, 96}, DType::kF32).value();
    ASSERT_TRUE(Linear(x, w, Tensor(), exact).ok());
    SetActivationDType(ActivationDType::kBF16);
    EXPECT_EQ(GetActivationDType(), ActivationDType::kBF16);
    const absl::Status s1 = Linear(x, w, Tensor(), rounded);
    w.f32_input = true;
    const absl::Status s2 = Linear(x, w, Tensor(), kept);
    SetActivationDType(ActivationDType::kF32);
    ASSERT_TRUE(s1.ok() && s2.ok());
    EXPECT_GT(RelativeError(rounded, exact), 1e-6) << "m=" << m << ": bf16 changed nothing";
    EXPECT_LT(RelativeError(rounded, exact), 1e-2) << "m=" << m;
    for (int64_t j = 0; j < exact.numel(); ++j) {
      ASSERT_EQ(kept.data<float>()[j], exact.data<float>()[j]) << "m=" << m << " at " << j;
    }
  }
}

}  // namespace
}  // namespace tessera
