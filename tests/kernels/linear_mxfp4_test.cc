// Tests for MXFP4 weights (LinearWeight::mx_scales) in tessera::Linear and LinearGroup: every ISA
// path (the AVX-512 GEMV on reordered x, the scalar fallback AVX2 machines use for the GEMV, and
// the packed GEMM's block decoder on both ISAs), row counts across the GEMV, row-chunk and GEMM
// ranges, every e2m1 code at extreme exponents (decoded exactly like std::ldexp, as transformers
// does), grouped problems, and the validation errors. Compared with tessera::ref::Linear.
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
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
using ::testing::HasSubstr;

class IsaScope {
 public:
  explicit IsaScope(Isa isa) { cpu::SetIsaOverride(isa); }
  ~IsaScope() { cpu::SetIsaOverride(std::nullopt); }
};

bool IsaAvailable(Isa isa) {
  return static_cast<int>(isa) <= static_cast<int>(cpu::BestSupportedIsa());
}

// A random MXFP4 [n, k] weight: every code byte uniform, exponents uniform in [lo, hi].
LinearWeight MakeMxfp4Weight(int64_t n, int64_t k, uint64_t seed, int lo = 118, int hi = 124) {
  std::mt19937_64 rng(seed);
  LinearWeight w;
  w.weight = Tensor::Empty({n, k / 2}, DType::kU8).value();
  w.mx_scales = Tensor::Empty({n, k / kMxfp4BlockSize}, DType::kU8).value();
  uint8_t* codes = w.weight.data<uint8_t>();
  for (int64_t i = 0; i < n * k / 2; ++i) codes[i] = static_cast<uint8_t>(rng());
  std::uniform_int_distribution<int> exponent(lo, hi);
  uint8_t* scales = w.mx_scales.data<uint8_t>();
  for (int64_t i = 0; i < n * k / kMxfp4BlockSize; ++i) {
    scales[i] = static_cast<uint8_t>(exponent(rng));
  }
  return w;
}

Tensor Apply(const Tensor& x, const LinearWeight& w, const Tensor& bias) {
  Tensor out = Tensor::Empty({x.dim(0), w.out_features()}, DType::kF32).value();
  const absl::Status st = Linear(x, w, bias, out);
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

Tensor RunReference(const Tensor& x, const LinearWeight& w, const Tensor& bias) {
  Tensor out = Tensor::Empty({x.dim(0), w.out_features()}, DType::kF32).value();
  const absl::Status st = ref::Linear(x, w, bias, out);
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

using Mxfp4Param = std::tuple<Isa, int64_t /*m*/, std::pair<int64_t, int64_t> /*n, k*/>;

class Mxfp4SweepTest : public ::testing::TestWithParam<Mxfp4Param> {};

TEST_P(Mxfp4SweepTest, MatchesReference) {
  const auto [isa, m, nk] = GetParam();
  const auto [n, k] = nk;
  if (!IsaAvailable(isa)) GTEST_SKIP() << cpu::IsaName(isa) << " not supported on this CPU";
  IsaScope scope(isa);
  const uint64_t seed = static_cast<uint64_t>(m * 7919 + n * 31 + k);
  const LinearWeight w = MakeMxfp4Weight(n, k, seed);
  // Strided rows: x is the first k columns of [m, k + 3].
  const Tensor x = RandomTensor({m, k + 3}, seed + 1).Slice(1, 0, k);
  const Tensor bias = m % 2 == 0 ? RandomTensor({n}, seed + 2) : Tensor();
  // The weights are exact in f32, so only the summation order differs from the double reference.
  EXPECT_LT(RelativeError(Apply(x, w, bias), RunReference(x, w, bias)), 1e-5)
      << cpu::IsaName(isa) << " m=" << m << " n=" << n << " k=" << k;
}

std::string Mxfp4ParamName(const ::testing::TestParamInfo<Mxfp4Param>& info) {
  const auto [isa, m, nk] = info.param;
  return absl::StrCat(cpu::IsaName(isa), "_m", m, "_n", nk.first, "_k", nk.second);
}

INSTANTIATE_TEST_SUITE_P(
    IsasRowsShapes, Mxfp4SweepTest,
    ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                       ::testing::Values(1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 32, 33, 100),
                       ::testing::Values(std::make_pair<int64_t, int64_t>(1, 32),
                                         std::make_pair<int64_t, int64_t>(37, 96),
                                         std::make_pair<int64_t, int64_t>(130, 608))),
    Mxfp4ParamName);

// gpt-oss's expert shape (k = 2880 = 90 blocks, several GEMM k-blocks and thread chunks).
TEST(Mxfp4Linear, GptOssExpertShapeMatchesReference) {
  const int64_t n = 192, k = 2880;
  const LinearWeight w = MakeMxfp4Weight(n, k, 11);
  for (int64_t m : {int64_t{1}, int64_t{4}, int64_t{24}, int64_t{64}}) {
    const Tensor x = RandomTensor({m, k}, 12 + m);
    const Tensor bias = RandomTensor({n}, 13);
    EXPECT_LT(RelativeError(Apply(x, w, bias), RunReference(x, w, bias)), 1e-5) << "m=" << m;
  }
}

// Row r of the weight holds code r % 16 at element e(r) and zeros elsewhere, with exponent s; x is
// the identity, so out[i][r] is the decoded weight element (r, i), which must equal
// std::ldexp(e2m1(code), s - 127) exactly: zero stays zero, 2^-127 scales give f32 subnormals.
TEST(Mxfp4Linear, EveryCodeDecodesExactlyAtExtremeExponents) {
  static constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!IsaAvailable(isa)) continue;
    IsaScope scope(isa);
    for (int s : {0, 1, 2, 100, 127, 150, 253, 254}) {
      const int64_t n = 32, k = 64;
      LinearWeight w;
      w.weight = Tensor::Zeros({n, k / 2}, DType::kU8).value();
      w.mx_scales = Tensor::Empty({n, k / kMxfp4BlockSize}, DType::kU8).value();
      for (int64_t i = 0; i < n * 2; ++i) w.mx_scales.data<uint8_t>()[i] = static_cast<uint8_t>(s);
      auto position = [](int64_t r) { return (r * 5 + r / 16) % 64; };  // both nibbles, both blocks
      for (int64_t r = 0; r < n; ++r) {
        const int64_t c = position(r);
        uint8_t& byte = w.weight.data<uint8_t>()[r * (k / 2) + c / 2];
        byte = static_cast<uint8_t>(c % 2 == 0 ? (r % 16) : (r % 16) << 4);
      }
      // m = 64 (packed GEMM) and its first 8 rows (GEMV), identity rows.
      Tensor x = Tensor::Zeros({k, k}, DType::kF32).value();
      for (int64_t i = 0; i < k; ++i) x.data<float>()[i * k + i] = 1.0f;
      for (int64_t m : {int64_t{8}, int64_t{20}, k}) {
        const Tensor xm = x.Slice(0, 0, m);
        const Tensor out = Apply(xm, w, Tensor());
        for (int64_t r = 0; r < n; ++r) {
          const int64_t c = position(r);
          if (c >= m) continue;
          const int code = static_cast<int>(r % 16);
          const float mag = kE2M1[code & 7];
          const float expected = std::ldexp(code & 8 ? -mag : mag, s - 127);
          EXPECT_EQ(out.data<float>()[c * n + r], expected)
              << cpu::IsaName(isa) << " code " << code << " exponent " << s << " m=" << m;
        }
      }
    }
  }
}

// LinearGroup with MXFP4 and bf16 problems of decode, batched-decode and prefill sizes equals
// Linear on each (the MoE layer's path).
TEST(Mxfp4Linear, GroupEqualsLinearOnEveryProblem) {
  struct Problem {
    LinearWeight w;
    Tensor x, bias, out;
  };
  std::vector<Problem> problems;
  const int64_t rows[] = {1, 3, 12, 40};
  for (int i = 0; i < 8; ++i) {
    Problem p;
    const int64_t n = 48 + 16 * i, k = 32 * (3 + i), m = rows[i % 4];
    if (i % 3 == 2) {
      p.w.weight = RandomTensor({n, k}, 100 + i).To(DType::kBF16).value();
    } else {
      p.w = MakeMxfp4Weight(n, k, 100 + i);
    }
    p.x = RandomTensor({m, k}, 200 + i);
    if (i % 2 == 0) p.bias = RandomTensor({n}, 300 + i);
    p.out = Tensor::Empty({m, n}, DType::kF32).value();
    problems.push_back(std::move(p));
  }
  std::vector<LinearProblem> group;
  for (Problem& p : problems) {
    group.push_back({&p.x, &p.w, p.bias.defined() ? &p.bias : nullptr, &p.out});
  }
  ASSERT_TRUE(LinearGroup(group).ok());
  for (size_t i = 0; i < problems.size(); ++i) {
    const Problem& p = problems[i];
    const Tensor alone = Apply(p.x, p.w, p.bias);
    EXPECT_LT(RelativeError(p.out, alone), 1e-6) << "problem " << i;
    EXPECT_LT(RelativeError(p.out, RunReference(p.x, p.w, p.bias)), 1e-5) << "problem " << i;
  }
}

class Mxfp4ErrorTest : public ::testing::Test {
 protected:
  absl::Status Call(const Tensor& x, const LinearWeight& w) {
    Tensor out = Tensor::Empty({x.dim(0), w.weight.dim(0)}, DType::kF32).value();
    return Linear(x, w, Tensor(), out);
  }
};

TEST_F(Mxfp4ErrorTest, WrongScaleShapeIsNamed) {
  LinearWeight w = MakeMxfp4Weight(8, 64, 1);
  w.mx_scales = Tensor::Zeros({8, 3}, DType::kU8).value();
  const absl::Status st = Call(RandomTensor({2, 64}, 2), w);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("mx_scales must be contiguous u8 [8, 2]"));
}

TEST_F(Mxfp4ErrorTest, InFeaturesNotAMultipleOfTheBlock) {
  LinearWeight w;
  w.weight = Tensor::Zeros({4, 20}, DType::kU8).value();  // k = 40
  w.mx_scales = Tensor::Zeros({4, 1}, DType::kU8).value();
  const absl::Status st = Call(RandomTensor({1, 40}, 3), w);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("not a multiple of the 32-element"));
}

TEST_F(Mxfp4ErrorTest, InputWidthMustBeTwiceTheCodeBytes) {
  const LinearWeight w = MakeMxfp4Weight(4, 64, 4);
  const absl::Status st = Call(RandomTensor({1, 32}, 5), w);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("holds in_features 64"));
}

TEST_F(Mxfp4ErrorTest, CodesMustBeU8) {
  LinearWeight w = MakeMxfp4Weight(4, 64, 6);
  w.weight = RandomTensor({4, 32}, 7).To(DType::kBF16).value();
  const absl::Status st = Call(RandomTensor({1, 64}, 8), w);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("must be contiguous u8 [n, k / 2]"));
}

TEST_F(Mxfp4ErrorTest, ReferenceValidatesToo) {
  LinearWeight w = MakeMxfp4Weight(8, 64, 9);
  w.scale_inv = RandomTensor({1, 1}, 10);
  Tensor out = Tensor::Empty({1, 8}, DType::kF32).value();
  const absl::Status st = ref::Linear(RandomTensor({1, 64}, 11), w, Tensor(), out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("cannot also have fp8 scale_inv"));
}

}  // namespace
}  // namespace tessera
