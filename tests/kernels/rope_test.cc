// Tests of RopeConfig / RopeCache / ApplyRope (kernels/ops.h): inverse frequencies and attention
// scaling of every scaling type against values computed here from the published formulas
// (DeepSeek-V3 and gpt-oss YaRN configs included), both layouts, partial rotary, and the
// rotation against tessera::ref.

#include <cmath>
#include <memory>
#include <numbers>
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
constexpr double kPi = std::numbers::pi;

// A tensor that claims to live on cuda:0 (host memory wrapped with a CUDA device tag), to check
// the device dispatch without a GPU. Never dereferenced by the code under test.
Tensor FakeCudaTensor(std::initializer_list<int64_t> shape, DType dtype) {
  auto storage = std::make_shared<std::vector<char>>(NumElements(shape) * DTypeSize(dtype) + 64);
  return *Tensor::FromBuffer(WrapBuffer(storage->data(), storage->size(), Device::Cuda(0), storage),
                             0, shape, dtype);
}

RopeConfig Basic(int head_dim, bool neox, int rotary_dim = 0) {
  RopeConfig c;
  c.head_dim = head_dim;
  c.rotary_dim = rotary_dim;
  c.neox_style = neox;
  c.theta = 10000.0;
  c.max_position = 1024;
  return c;
}

RopeConfig DeepSeekV3() {
  RopeConfig c;
  c.head_dim = 64;  // qk_rope_head_dim
  c.neox_style = false;
  c.theta = 10000.0;
  c.max_position = 163840;
  c.scaling = RopeConfig::Scaling::kYarn;
  c.factor = 40;
  c.original_max_position = 4096;
  c.beta_fast = 32;
  c.beta_slow = 1;
  c.mscale = 1;
  c.mscale_all_dim = 1;
  return c;
}

RopeConfig GptOss() {
  RopeConfig c;
  c.head_dim = 64;
  c.neox_style = true;
  c.theta = 150000.0;
  c.max_position = 131072;
  c.scaling = RopeConfig::Scaling::kYarn;
  c.factor = 32;
  c.original_max_position = 4096;
  c.beta_fast = 32;
  c.beta_slow = 1;
  c.mscale = 1;
  c.mscale_all_dim = 0;
  c.truncate = false;
  return c;
}

// The YaRN inverse frequencies written out from the paper / HF formulas, in double.
std::vector<double> YarnInvFreq(int dim, double theta, double factor, double original,
                                double beta_fast, double beta_slow, bool truncate) {
  auto corr = [&](double rot) {
    return dim * std::log(original / (rot * 2 * kPi)) / (2 * std::log(theta));
  };
  double low = corr(beta_fast), high = corr(beta_slow);
  if (truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  std::vector<double> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    const double extrapolation = std::pow(theta, -2.0 * i / dim);
    const double ramp = std::min(1.0, std::max(0.0, (i - low) / (high - low)));
    inv[i] = extrapolation * (1 - ramp) + extrapolation / factor * ramp;
  }
  return inv;
}

void ExpectInvFreqNear(const RopeCache& cache, const std::vector<double>& expected) {
  ASSERT_EQ(cache.inv_freq().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(cache.inv_freq()[i], expected[i], 1e-6 * expected[i]) << "i = " << i;
  }
}

// cos/sin rows hold cos(f32(p) * inv_freq) * scaling, where the product is an f32 product as in
// HF; checked at a few positions including large ones.
void ExpectTablesConsistent(const RopeCache& cache, std::vector<int64_t> positions) {
  const int64_t half = static_cast<int64_t>(cache.inv_freq().size());
  const double scaling = cache.config().AttentionScaling();
  for (int64_t p : positions) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * static_cast<float>(cache.inv_freq()[i]);
      EXPECT_NEAR(cache.cos().data<float>()[p * half + i], std::cos(double(angle)) * scaling,
                  2e-7 * scaling)
          << "p = " << p << " i = " << i;
      EXPECT_NEAR(cache.sin().data<float>()[p * half + i], std::sin(double(angle)) * scaling,
                  2e-7 * scaling)
          << "p = " << p << " i = " << i;
    }
  }
}

// ---- Inverse frequencies and scaling -----------------------------------------------------------

TEST(RopeCacheTest, DefaultInvFreq) {
  RopeCache cache = *RopeCache::Create(Basic(128, true));
  std::vector<double> expected(64);
  for (int i = 0; i < 64; ++i) expected[i] = std::pow(10000.0, -2.0 * i / 128);
  ExpectInvFreqNear(cache, expected);
  EXPECT_EQ(cache.config().AttentionScaling(), 1.0);
  EXPECT_EQ(cache.cos().shape(), (Shape{1024, 64}));
  ExpectTablesConsistent(cache, {0, 1, 17, 1023});
}

TEST(RopeCacheTest, InvFreqIsHfFloat32) {
  // HF computes 1 / theta^(f32(2i) / f32(d)) in float32; the cache keeps exactly those values.
  RopeCache cache = *RopeCache::Create(Basic(96, true));
  for (int i = 0; i < 48; ++i) {
    const float exponent = float(2 * i) / 96.0f;
    const float expected = 1.0f / float(std::pow(10000.0, double(exponent)));
    EXPECT_EQ(cache.inv_freq()[i], double(expected)) << i;
  }
}

TEST(RopeCacheTest, LinearScalingDividesFrequencies) {
  RopeConfig c = Basic(32, true);
  c.scaling = RopeConfig::Scaling::kLinear;
  c.factor = 4;
  RopeCache cache = *RopeCache::Create(c);
  std::vector<double> expected(16);
  for (int i = 0; i < 16; ++i) expected[i] = std::pow(10000.0, -2.0 * i / 32) / 4;
  ExpectInvFreqNear(cache, expected);
  EXPECT_EQ(c.AttentionScaling(), 1.0);
  // Equivalent to dividing positions by the factor: row 8 equals the unscaled row 2.
  RopeCache plain = *RopeCache::Create(Basic(32, true));
  for (int i = 0; i < 16; ++i) {
    EXPECT_NEAR(cache.cos().data<float>()[8 * 16 + i], plain.cos().data<float>()[2 * 16 + i], 1e-6);
  }
}

TEST(RopeCacheTest, Llama3Scaling) {
  RopeConfig c = Basic(128, true);
  c.theta = 500000;
  c.max_position = 4096;
  c.scaling = RopeConfig::Scaling::kLlama3;
  c.factor = 8;
  c.low_freq_factor = 1;
  c.high_freq_factor = 4;
  c.original_max_position = 8192;
  RopeCache cache = *RopeCache::Create(c);
  std::vector<double> expected(64);
  int high = 0, low = 0, medium = 0;
  for (int i = 0; i < 64; ++i) {
    const double inv = std::pow(500000.0, -2.0 * i / 128);
    const double wavelen = 2 * kPi / inv;
    if (wavelen < 8192.0 / 4) {
      expected[i] = inv;
      ++high;
    } else if (wavelen > 8192.0 / 1) {
      expected[i] = inv / 8;
      ++low;
    } else {
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      expected[i] = (1 - smooth) * inv / 8 + smooth * inv;
      ++medium;
    }
  }
  ASSERT_GT(high, 0);
  ASSERT_GT(low, 0);
  ASSERT_GT(medium, 0);
  ExpectInvFreqNear(cache, expected);
  EXPECT_EQ(c.AttentionScaling(), 1.0);
}

TEST(RopeCacheTest, DeepSeekV3Yarn) {
  RopeConfig c = DeepSeekV3();
  RopeCache cache = *RopeCache::Create(c);
  // Correction range: floor(10.47) = 10 .. ceil(22.51) = 23 for rotary dim 64.
  std::vector<double> expected = YarnInvFreq(64, 10000, 40, 4096, 32, 1, true);
  ExpectInvFreqNear(cache, expected);
  // Dimensions below the range keep the original frequency, above it are divided by 40.
  EXPECT_NEAR(cache.inv_freq()[5], std::pow(10000.0, -10.0 / 64), 1e-7);
  EXPECT_NEAR(cache.inv_freq()[30], std::pow(10000.0, -60.0 / 64) / 40, 1e-10);
  // mscale == mscale_all_dim: the cos/sin multiplier is 1.
  EXPECT_DOUBLE_EQ(c.AttentionScaling(), 1.0);
  ExpectTablesConsistent(cache, {0, 1, 4095, 100000, 163839});
}

TEST(RopeCacheTest, YarnMscaleRatio) {
  RopeConfig c = DeepSeekV3();
  c.mscale = 1.0;
  c.mscale_all_dim = 0.5;
  const double l = std::log(40.0);
  EXPECT_NEAR(c.AttentionScaling(), (0.1 * l + 1) / (0.05 * l + 1), 1e-12);
  RopeCache cache = *RopeCache::Create(c);
  ExpectTablesConsistent(cache, {3, 5000});
}

TEST(RopeCacheTest, GptOssYarnWithoutTruncation) {
  RopeConfig c = GptOss();
  RopeCache cache = *RopeCache::Create(c);
  ExpectInvFreqNear(cache, YarnInvFreq(64, 150000, 32, 4096, 32, 1, false));
  EXPECT_NEAR(c.AttentionScaling(), 0.1 * std::log(32.0) + 1.0, 1e-12);
  ExpectTablesConsistent(cache, {0, 2, 4096, 131071});
  // Truncation changes the ramp, so the two settings really differ.
  c.truncate = true;
  std::vector<double> truncated = YarnInvFreq(64, 150000, 32, 4096, 32, 1, true);
  RopeCache truncated_cache = *RopeCache::Create(c);
  ExpectInvFreqNear(truncated_cache, truncated);
  double max_diff = 0;
  for (int i = 0; i < 32; ++i) {
    max_diff = std::max(max_diff, std::abs(truncated[i] - cache.inv_freq()[i]) / truncated[i]);
  }
  EXPECT_GT(max_diff, 1e-3);
}

TEST(RopeCacheTest, Qwen3StyleYarnDefaultsAttentionFactor) {
  RopeConfig c;
  c.head_dim = 128;
  c.theta = 1000000;
  c.max_position = 2048;
  c.scaling = RopeConfig::Scaling::kYarn;
  c.factor = 4;
  c.original_max_position = 32768;
  RopeCache cache = *RopeCache::Create(c);
  ExpectInvFreqNear(cache, YarnInvFreq(128, 1000000, 4, 32768, 32, 1, true));
  EXPECT_NEAR(c.AttentionScaling(), 0.1 * std::log(4.0) + 1.0, 1e-12);
  EXPECT_NEAR(cache.cos().data<float>()[0], c.AttentionScaling(), 1e-6);
}

TEST(RopeCacheTest, RejectsOddRotaryDim) {
  absl::StatusOr<RopeCache> cache = RopeCache::Create(Basic(64, true, 33));
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cache.status().message()), HasSubstr("rotary_dim"));
}

TEST(RopeCacheTest, RejectsYarnWithoutOriginalMaxPosition) {
  RopeConfig c = DeepSeekV3();
  c.original_max_position = 0;
  absl::StatusOr<RopeCache> cache = RopeCache::Create(c);
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cache.status().message()), HasSubstr("original_max_position"));
}

// ---- Rotation: hand-computed -------------------------------------------------------------------

TEST(ApplyRopeTest, NeoxPairsHalves) {
  RopeCache cache = *RopeCache::Create(Basic(4, true));  // inv_freq = [1, 0.01]
  Tensor x = Tensor::FromVector(std::vector<float>{1, 2, 3, 4}, {1, 1, 4});
  ASSERT_TRUE(ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{3}, {1}), x).ok());
  const double a = 3.0, b = 0.03;
  const float* v = x.data<float>();
  EXPECT_NEAR(v[0], 1 * std::cos(a) - 3 * std::sin(a), 1e-6);
  EXPECT_NEAR(v[2], 3 * std::cos(a) + 1 * std::sin(a), 1e-6);
  EXPECT_NEAR(v[1], 2 * std::cos(b) - 4 * std::sin(b), 1e-6);
  EXPECT_NEAR(v[3], 4 * std::cos(b) + 2 * std::sin(b), 1e-6);
}

TEST(ApplyRopeTest, GptjPairsNeighbours) {
  RopeCache cache = *RopeCache::Create(Basic(4, false));
  Tensor x = Tensor::FromVector(std::vector<float>{1, 2, 3, 4}, {1, 1, 4});
  ASSERT_TRUE(ApplyRope(cache, Tensor::FromVector(std::vector<int64_t>{3}, {1}), x).ok());
  const double a = 3.0, b = 0.03;
  const float* v = x.data<float>();
  EXPECT_NEAR(v[0], 1 * std::cos(a) - 2 * std::sin(a), 1e-6);
  EXPECT_NEAR(v[1], 2 * std::cos(a) + 1 * std::sin(a), 1e-6);
  EXPECT_NEAR(v[2], 3 * std::cos(b) - 4 * std::sin(b), 1e-6);
  EXPECT_NEAR(v[3], 4 * std::cos(b) + 3 * std::sin(b), 1e-6);
}

TEST(ApplyRopeTest, PartialRotaryPassesTailThrough) {
  for (bool neox : {true, false}) {
    RopeConfig c = Basic(10, neox, 4);  // rotary inv_freq = [1, 0.01]
    RopeCache cache = *RopeCache::Create(c);
    std::vector<float> in = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    Tensor x = Tensor::FromVector(in, {1, 1, 10});
    ASSERT_TRUE(ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{2}, {1}), x).ok());
    const float* v = x.data<float>();
    for (int i = 4; i < 10; ++i) EXPECT_EQ(v[i], in[i]) << i;
    const int p0 = 0, p1 = neox ? 2 : 1;  // the partner of element 0 at angle 2
    EXPECT_NEAR(v[p0], in[p0] * std::cos(2.0) - in[p1] * std::sin(2.0), 1e-6);
    EXPECT_NEAR(v[p1], in[p1] * std::cos(2.0) + in[p0] * std::sin(2.0), 1e-6);
  }
}

TEST(ApplyRopeTest, DeepSeekDeinterleaveEqualsGptjUpToPermutation) {
  // HF DeepSeek-V3: x' = deinterleave(x) (x'[j] = x[2j], x'[d/2 + j] = x[2j + 1]), then
  // rotate_half. GPT-J rotation of x followed by the same permutation gives the same vector.
  RopeConfig c = DeepSeekV3();
  c.max_position = 8192;
  RopeCache cache = *RopeCache::Create(c);
  const int d = 64, half = 32;
  Tensor q = RandomTensor({1, 1, d}, 31);
  std::vector<float> orig(q.data<float>(), q.data<float>() + d);
  const int64_t pos = 5000;
  ASSERT_TRUE(
      ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{int32_t(pos)}, {1}), q).ok());
  const float* cs = cache.cos().data<float>() + pos * half;
  const float* sn = cache.sin().data<float>() + pos * half;
  for (int j = 0; j < half; ++j) {
    const float a = orig[2 * j], b = orig[2 * j + 1];  // deinterleaved halves
    const float first = a * cs[j] - b * sn[j];
    const float second = b * cs[j] + a * sn[j];
    EXPECT_EQ(q.data<float>()[2 * j], first) << j;
    EXPECT_EQ(q.data<float>()[2 * j + 1], second) << j;
  }
}

// ---- Rotation vs the reference -----------------------------------------------------------------

struct RopeCase {
  const char* name;
  RopeConfig config;
};

void PrintTo(const RopeCase& c, std::ostream* os) { *os << c.name; }

class ApplyRopeRefTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(ApplyRopeRefTest, MatchesReferenceOnFusedView) {
  const RopeConfig& c = GetParam().config;
  RopeCache cache = *RopeCache::Create(c);
  const int64_t tokens = 13, heads = 5, d = c.head_dim, stride = (heads + 3) * d;
  Tensor buffer = RandomTensor({tokens, stride}, 41);
  Tensor x = buffer.AsStrided({tokens, heads, d}, {stride, d, 1}, d);  // skip one head
  Tensor expected = *x.Clone();
  Tensor untouched = *buffer.Clone();
  std::vector<int64_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = (t * 37) % 500;
  Tensor positions = Tensor::FromVector(pos, {tokens});
  ASSERT_TRUE(ApplyRope(cache, positions, x).ok());
  ASSERT_TRUE(ref::ApplyRope(cache, positions, expected).ok());
  EXPECT_LT(RelativeError(*x.Clone(), expected), 1e-5);
  // Elements outside the view are untouched.
  EXPECT_EQ(RelativeError(buffer.Slice(1, 0, d), untouched.Slice(1, 0, d)), 0.0);
  EXPECT_EQ(RelativeError(buffer.Slice(1, (heads + 1) * d, stride),
                          untouched.Slice(1, (heads + 1) * d, stride)),
            0.0);
}

RopeConfig WithScaling(RopeConfig c, RopeConfig::Scaling s) {
  c.scaling = s;
  c.factor = 8;
  c.original_max_position = 256;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, ApplyRopeRefTest,
    ::testing::Values(
        RopeCase{"neox", Basic(64, true)}, RopeCase{"gptj", Basic(64, false)},
        RopeCase{"neox_partial", Basic(96, true, 32)},
        RopeCase{"gptj_partial", Basic(72, false, 24)},
        RopeCase{"linear", WithScaling(Basic(64, true), RopeConfig::Scaling::kLinear)},
        RopeCase{"llama3", WithScaling(Basic(64, true), RopeConfig::Scaling::kLlama3)},
        RopeCase{"yarn", WithScaling(Basic(64, true), RopeConfig::Scaling::kYarn)},
        RopeCase{"deepseek_v3", DeepSeekV3()}, RopeCase{"gpt_oss", GptOss()}),
    [](const ::testing::TestParamInfo<RopeCase>& info) { return std::string(info.param.name); });

// ---- Errors ------------------------------------------------------------------------------------

TEST(ApplyRopeTest, PositionOutOfRangeIsAnError) {
  RopeCache cache = *RopeCache::Create(Basic(8, true));  // max_position 1024
  for (int32_t bad : {1024, -1}) {
    Tensor x = RandomTensor({2, 1, 8}, 1);
    Tensor before = *x.Clone();
    absl::Status s = ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{0, bad}, {2}), x);
    EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
    EXPECT_THAT(std::string(s.message()), HasSubstr("positions[1]"));
    EXPECT_EQ(RelativeError(x, before), 0.0);  // nothing written
  }
}

TEST(ApplyRopeTest, RejectsHeadDimMismatch) {
  RopeCache cache = *RopeCache::Create(Basic(8, true));
  Tensor x = RandomTensor({2, 1, 10}, 1);
  absl::Status s = ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{0, 1}, {2}), x);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("head_dim"));
}

TEST(ApplyRopeTest, RejectsPositionCountMismatch) {
  RopeCache cache = *RopeCache::Create(Basic(8, true));
  Tensor x = RandomTensor({3, 1, 8}, 1);
  absl::Status s = ApplyRope(cache, Tensor::FromVector(std::vector<int32_t>{0, 1}, {2}), x);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("positions"));
}

TEST(ApplyRopeTest, CudaTensorIsUnimplemented) {
  // In CUDA builds these tensors go to kernels/cuda (tests/kernels/*_cuda_test.cc); the fake
  // device tensors here are host memory and must not reach a real kernel.
  if (BuiltWithCuda()) GTEST_SKIP() << "CUDA build: device tensors are served by kernels/cuda";
  RopeCache cache = *RopeCache::Create(Basic(8, true));
  Tensor x = FakeCudaTensor({2, 1, 8}, DType::kF32);
  Tensor positions = FakeCudaTensor({2}, DType::kI32);
  absl::Status s = ApplyRope(cache, positions, x);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CUDA"));
}

}  // namespace
}  // namespace tessera
