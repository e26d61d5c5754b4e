// Tests for MXFP4 weights (LinearWeight::mx_scales) in tessera::Linear and LinearGroup: every ISA
// path (the AVX-512 and AVX2 GEMVs on reordered x, the scalar path, and the packed GEMM's block
// decoders on both ISAs), row counts across the GEMV, row-chunk and GEMM ranges, every e2m1 code
// at extreme exponents including 255 (decoded exactly like std::ldexp, as transformers does),
// the per-ISA GEMV kernels called directly, grouped problems, and the validation errors.
// Compared with tessera::ref::Linear.
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
// std::ldexp(e2m1(code), s - 127) exactly: zero stays zero, 2^-127 scales give f32 subnormals,
// s = 255 gives 2^127 for code 0.5 and +-inf for larger magnitudes.
TEST(Mxfp4Linear, EveryCodeDecodesExactlyAtExtremeExponents) {
  static constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!IsaAvailable(isa)) continue;
    IsaScope scope(isa);
    for (int s : {0, 1, 2, 100, 127, 150, 253, 254, 255}) {
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

// Each ISA's MXFP4 GEMV kernel and the x layout it reads (PermuteRowsForMxfp4's `half`).
struct Mxfp4Kernel {
  Isa isa;
  int half;
  void (*gemv)(const cpu::LinearArgs&, int64_t, int64_t);
};
constexpr Mxfp4Kernel kMxfp4Kernels[] = {{Isa::kAvx2, 4, &cpu::avx2::GemvMxfp4},
                                         {Isa::kAvx512, 16, &cpu::avx512::GemvMxfp4}};

// Raw kernel arguments for the first m rows of x [rows, k] (contiguous) against MXFP4 weight w,
// with xp = x reordered for `kernel` (PermuteRowsForMxfp4); out left for the caller.
cpu::LinearArgs Mxfp4KernelArgs(const Tensor& x, int64_t m, const LinearWeight& w,
                                const Mxfp4Kernel& kernel, const std::vector<float>& xp,
                                const float* bias) {
  cpu::LinearArgs a;
  a.x = x.data<float>();
  a.ldx = x.dim(1);
  a.m = m;
  a.n = w.out_features();
  a.k = x.dim(1);
  a.w = w.weight.raw_data();
  a.w_dtype = DType::kU8;
  a.mx_scales = w.mx_scales.data<uint8_t>();
  a.bias = bias;
  a.ldo = a.n;
  a.xp = xp.data();
  a.ldxp = a.k;
  a.xp_half = kernel.half;
  return a;
}

// The MXFP4 GEMV kernels called directly (no dispatcher, so no silent fallback to the scalar
// path): every m they take, column ranges that start and end off their tile widths, x rows
// reordered for each kernel, against the scalar GEMV on the same arguments. x holds multiples of
// 1/8 in [-1, 1] and the exponents are 124..130, so every partial sum is a multiple of 2^-7 below
// 2^17: exact in f32 whatever the summation order, and compared exactly.
TEST(Mxfp4Linear, GemvKernelsMatchScalarOnEveryRowCountAndColumnRange) {
  const int64_t n = 23, k = 160;
  const LinearWeight w = MakeMxfp4Weight(n, k, 77, 124, 130);
  Tensor x = Tensor::Empty({cpu::kGemvMaxRows, k}, DType::kF32).value();
  Tensor bias = Tensor::Empty({n}, DType::kF32).value();
  std::mt19937 rng(78);
  std::uniform_int_distribution<int> eighths(-8, 8);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = eighths(rng) / 8.0f;
  for (int64_t j = 0; j < n; ++j) bias.data<float>()[j] = eighths(rng) / 8.0f;
  for (const Mxfp4Kernel& kernel : kMxfp4Kernels) {
    if (!IsaAvailable(kernel.isa)) continue;
    std::vector<float> xp(static_cast<size_t>(cpu::kGemvMaxRows * k));
    cpu::PermuteRowsForMxfp4(x.data<float>(), k, cpu::kGemvMaxRows, k, kernel.half, xp.data());
    for (int64_t m = 1; m <= cpu::kGemvMaxRows; ++m) {
      for (const auto& [j0, j1] : {std::pair<int64_t, int64_t>{0, n}, {3, 20}, {5, 6}}) {
        std::vector<float> got(static_cast<size_t>(m * n), -1.0f), want = got;
        cpu::LinearArgs a = Mxfp4KernelArgs(x, m, w, kernel, xp, bias.data<float>());
        a.out = got.data();
        kernel.gemv(a, j0, j1);
        a.out = want.data();
        cpu::GemvScalar(a, j0, j1);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            const float g = got[i * n + j], e = want[i * n + j];
            if (j < j0 || j >= j1) {
              EXPECT_EQ(g, -1.0f) << "wrote outside [j0, j1): " << cpu::IsaName(kernel.isa);
            } else {
              EXPECT_EQ(g, e)
                  << cpu::IsaName(kernel.isa) << " m=" << m << " i=" << i << " j=" << j
                  << " range [" << j0 << ", " << j1 << ")";
            }
          }
        }
      }
    }
  }
}

// Linear dispatches MXFP4 GEMVs to each ISA's own kernel, not the scalar fallback: with random
// values the kernels' summation orders give results that differ from the scalar loop's in the
// last bits, and Linear's output must equal the ISA kernel's bit for bit (checked to differ from
// the scalar loop, so the test can tell them apart).
TEST(Mxfp4Linear, LinearUsesEachIsasGemvKernel) {
  const int64_t n = 48, k = 608;
  const LinearWeight w = MakeMxfp4Weight(n, k, 90);
  for (const Mxfp4Kernel& kernel : kMxfp4Kernels) {
    if (!IsaAvailable(kernel.isa)) continue;
    IsaScope scope(kernel.isa);
    for (int64_t m : {int64_t{1}, int64_t{3}}) {
      const Tensor x = RandomTensor({m, k}, 91 + m);
      const Tensor linear = Apply(x, w, Tensor());
      std::vector<float> xp(static_cast<size_t>(m * k));
      cpu::PermuteRowsForMxfp4(x.data<float>(), k, m, k, kernel.half, xp.data());
      std::vector<float> direct(static_cast<size_t>(m * n)), scalar = direct;
      cpu::LinearArgs a = Mxfp4KernelArgs(x, m, w, kernel, xp, nullptr);
      a.out = direct.data();
      kernel.gemv(a, 0, n);
      a.out = scalar.data();
      cpu::GemvScalar(a, 0, n);
      int differs_from_scalar = 0;
      for (int64_t e = 0; e < m * n; ++e) {
        EXPECT_EQ(linear.data<float>()[e], direct[e]) << cpu::IsaName(kernel.isa) << " m=" << m;
        differs_from_scalar += direct[e] != scalar[e];
      }
      EXPECT_GT(differs_from_scalar, 0) << cpu::IsaName(kernel.isa) << " m=" << m;
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
