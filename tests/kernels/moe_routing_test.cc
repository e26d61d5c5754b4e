// Tests of MoeRoute (kernels/ops.h): every scoring mode against hand-computed routings and
// tessera::ref, group-limited selection against a brute-force definition, ties, renormalisation,
// scaling, and operand validation.

#include <cmath>
#include <memory>
#include <random>
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
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using Scoring = RouterConfig::Scoring;

// A tensor that claims to live on cuda:0 (host memory wrapped with a CUDA device tag), to check
// the device dispatch without a GPU. Never dereferenced by the code under test.
Tensor FakeCudaTensor(std::initializer_list<int64_t> shape, DType dtype) {
  auto storage = std::make_shared<std::vector<char>>(NumElements(shape) * DTypeSize(dtype) + 64);
  return *Tensor::FromBuffer(WrapBuffer(storage->data(), storage->size(), Device::Cuda(0), storage),
                             0, shape, dtype);
}

struct Routing {
  Tensor weights, ids;
  std::vector<float> w() const {
    return {weights.data<float>(), weights.data<float>() + weights.numel()};
  }
  std::vector<int32_t> i() const {
    return {ids.data<int32_t>(), ids.data<int32_t>() + ids.numel()};
  }
};

Routing Route(const Tensor& logits, const Tensor& bias, const RouterConfig& config) {
  Routing r{*Tensor::Empty({logits.dim(0), config.top_k}, DType::kF32),
            *Tensor::Empty({logits.dim(0), config.top_k}, DType::kI32)};
  absl::Status s = MoeRoute(logits, bias, config, r.weights, r.ids);
  EXPECT_TRUE(s.ok()) << s;
  return r;
}

Routing RouteRef(const Tensor& logits, const Tensor& bias, const RouterConfig& config) {
  Routing r{*Tensor::Empty({logits.dim(0), config.top_k}, DType::kF32),
            *Tensor::Empty({logits.dim(0), config.top_k}, DType::kI32)};
  absl::Status s = ref::MoeRoute(logits, bias, config, r.weights, r.ids);
  EXPECT_TRUE(s.ok()) << s;
  return r;
}

Tensor Row(std::vector<float> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::FromVector(v, {1, n});
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- kSoftmax ----------------------------------------------------------------------------------

TEST(MoeRouteTest, SoftmaxTopKWithoutRenormalisation) {
  RouterConfig c{.scoring = Scoring::kSoftmax, .top_k = 2, .renormalize = false};
  Routing r = Route(Row({0.0f, 2.0f, 1.0f, -1.0f}), Tensor(), c);
  const double z = 1 + std::exp(2.0) + std::exp(1.0) + std::exp(-1.0);
  EXPECT_THAT(r.i(), ElementsAre(1, 2));
  EXPECT_THAT(r.w(),
              ElementsAre(FloatNear(std::exp(2.0) / z, 1e-6), FloatNear(std::exp(1.0) / z, 1e-6)));
}

TEST(MoeRouteTest, SoftmaxRenormalisedLikeMixtral) {
  RouterConfig c{.scoring = Scoring::kSoftmax, .top_k = 2, .renormalize = true};
  Routing r = Route(Row({0.0f, 2.0f, 1.0f, -1.0f}), Tensor(), c);
  const double a = std::exp(2.0), b = std::exp(1.0);
  EXPECT_THAT(r.i(), ElementsAre(1, 2));
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(a / (a + b), 1e-6), FloatNear(b / (a + b), 1e-6)));
}

TEST(MoeRouteTest, TiesGoToLowerIndex) {
  RouterConfig c{.scoring = Scoring::kSoftmax, .top_k = 3};
  Routing r = Route(Row({1.0f, 3.0f, 1.0f, 3.0f, 1.0f}), Tensor(), c);
  EXPECT_THAT(r.i(), ElementsAre(1, 3, 0));
  c.scoring = Scoring::kSoftmaxTopK;
  EXPECT_THAT(Route(Row({1.0f, 3.0f, 1.0f, 3.0f, 1.0f}), Tensor(), c).i(), ElementsAre(1, 3, 0));
  c.scoring = Scoring::kSigmoid;
  EXPECT_THAT(Route(Row({1.0f, 3.0f, 1.0f, 3.0f, 1.0f}), Tensor(), c).i(), ElementsAre(1, 3, 0));
}

// ---- kSoftmaxTopK (gpt-oss) --------------------------------------------------------------------

TEST(MoeRouteTest, SoftmaxOverSelectedLogits) {
  RouterConfig c{.scoring = Scoring::kSoftmaxTopK, .top_k = 2};
  Routing r = Route(Row({0.5f, -3.0f, 4.0f, 3.0f}), Tensor(), c);
  EXPECT_THAT(r.i(), ElementsAre(2, 3));
  const double e = std::exp(-1.0);
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(1 / (1 + e), 1e-6), FloatNear(e / (1 + e), 1e-6)));
}

// ---- kSigmoid (DeepSeek-V3 family) -------------------------------------------------------------

TEST(MoeRouteTest, SigmoidSelectsByBiasedScoreButWeighsUnbiased) {
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 2, .renormalize = false};
  Tensor logits = Row({2.0f, 0.0f, 1.0f, -1.0f});
  Tensor bias = Tensor::FromVector(std::vector<float>{0.0f, 0.0f, 0.0f, 0.9f}, {4});
  Routing r = Route(logits, bias, c);
  // choice = [0.881, 0.5, 0.731, 0.269 + 0.9 = 1.169]
  EXPECT_THAT(r.i(), ElementsAre(3, 0));
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(Sigmoid(-1), 1e-6), FloatNear(Sigmoid(2), 1e-6)));
}

TEST(MoeRouteTest, SigmoidRenormalisedAndScaled) {
  RouterConfig c{
      .scoring = Scoring::kSigmoid, .top_k = 2, .renormalize = true, .routed_scaling_factor = 2.5f};
  Routing r = Route(Row({2.0f, 0.0f, 1.0f, -1.0f}), Tensor(), c);
  const double a = Sigmoid(2), b = Sigmoid(1);
  EXPECT_THAT(r.i(), ElementsAre(0, 2));
  EXPECT_THAT(r.w(),
              ElementsAre(FloatNear(2.5 * a / (a + b), 1e-6), FloatNear(2.5 * b / (a + b), 1e-6)));
}

TEST(MoeRouteTest, ScalingFactorAppliesToSoftmaxModesToo) {
  RouterConfig c{.scoring = Scoring::kSoftmax, .top_k = 1, .routed_scaling_factor = 3.0f};
  Routing r = Route(Row({0.0f, 0.0f}), Tensor(), c);
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(1.5, 1e-6)));
}

TEST(MoeRouteTest, GroupLimitedSelectionHandComputed) {
  // 8 experts in 4 groups of 2; keep the 2 best groups by the sum of their top-2 choices.
  // Expert 6 has the single best score, but its group (3) sums lower than groups 0 and 2.
  RouterConfig c{.scoring = Scoring::kSigmoid,
                 .top_k = 3,
                 .renormalize = false,
                 .n_group = 4,
                 .topk_group = 2};
  Tensor logits = Row({1.0f, 1.0f, -2.0f, -2.0f, 0.9f, 0.9f, 3.0f, -4.0f});
  Routing r = Route(logits, Tensor(), c);
  // Group sums: g0 = 2 s(1) = 1.462, g1 = 0.238, g2 = 2 s(0.9) = 1.422, g3 = s(3) + s(-4) = 0.971.
  EXPECT_THAT(r.i(), ElementsAre(0, 1, 4));
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(Sigmoid(1), 1e-6), FloatNear(Sigmoid(1), 1e-6),
                                 FloatNear(Sigmoid(0.9), 1e-6)));
}

TEST(MoeRouteTest, GroupScoreUsesTopTwoNotMax) {
  // Group 0 has the highest single value; group 1 the highest sum of its top two.
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 1, .n_group = 2, .topk_group = 1};
  Tensor logits = Row({5.0f, -5.0f, -5.0f, 2.0f, 2.0f, 2.0f});
  EXPECT_THAT(Route(logits, Tensor(), c).i(), ElementsAre(3));
}

TEST(MoeRouteTest, MaskedExpertsScoreZeroAsInHf) {
  // HF masks dropped groups with 0.0, not -inf: with a strongly negative bias, an expert of a
  // dropped group (choice 0) beats a kept expert whose biased choice is negative.
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 3, .n_group = 2, .topk_group = 1};
  Tensor logits = Row({4.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f});
  Tensor bias = Tensor::FromVector(std::vector<float>{0, 0, -0.9f, 0, 0, 0}, {6});
  // Group 0 (experts 0..2) is kept; expert 2's choice is 0.5 - 0.9 < 0; group 1 masked to 0.
  Routing r = Route(logits, bias, c);
  EXPECT_THAT(r.i(), ElementsAre(0, 1, 3));
  EXPECT_THAT(r.w(), ElementsAre(FloatNear(Sigmoid(4), 1e-6), FloatNear(Sigmoid(4), 1e-6),
                                 FloatNear(0.5, 1e-6)));
}

// Brute-force definition of group-limited routing: a group is kept when fewer than topk_group
// groups rank before it; an expert is selected when fewer than top_k experts rank before it.
std::vector<int32_t> BruteForceGroupRoute(const std::vector<float>& logits,
                                          const std::vector<float>& bias, int n_group,
                                          int topk_group, int top_k) {
  const int n = static_cast<int>(logits.size()), per = n / n_group;
  std::vector<float> choice(n);
  for (int e = 0; e < n; ++e) choice[e] = 1.0f / (1.0f + std::exp(-logits[e])) + bias[e];
  std::vector<float> group(n_group);
  for (int g = 0; g < n_group; ++g) {
    float best = -INFINITY, second = -INFINITY;
    for (int e = g * per; e < (g + 1) * per; ++e) {
      if (choice[e] > best) {
        second = best;
        best = choice[e];
      } else if (choice[e] > second) {
        second = choice[e];
      }
    }
    group[g] = best + second;
  }
  auto before = [](float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); };
  std::vector<float> masked = choice;
  for (int g = 0; g < n_group; ++g) {
    int better = 0;
    for (int h = 0; h < n_group; ++h) better += before(group[h], h, group[g], g);
    if (better >= topk_group) {
      for (int e = g * per; e < (g + 1) * per; ++e) masked[e] = 0.0f;
    }
  }
  std::vector<std::pair<int, int>> rank_and_id;
  for (int e = 0; e < n; ++e) {
    int better = 0;
    for (int f = 0; f < n; ++f) better += before(masked[f], f, masked[e], e);
    if (better < top_k) rank_and_id.push_back({better, e});
  }
  std::sort(rank_and_id.begin(), rank_and_id.end());
  std::vector<int32_t> ids;
  for (auto [rank, e] : rank_and_id) ids.push_back(e);
  return ids;
}

TEST(MoeRouteTest, GroupLimitedSelectionMatchesBruteForce) {
  const int n = 64, n_group = 8, topk_group = 3, top_k = 6, tokens = 200;
  RouterConfig c{.scoring = Scoring::kSigmoid,
                 .top_k = top_k,
                 .renormalize = true,
                 .n_group = n_group,
                 .topk_group = topk_group,
                 .routed_scaling_factor = 2.5f};
  Tensor logits = RandomTensor({tokens, n}, 51, -4, 4);
  Tensor bias = RandomTensor({n}, 52, -0.3f, 0.3f);
  Routing r = Route(logits, bias, c);
  std::vector<float> b(bias.data<float>(), bias.data<float>() + n);
  for (int t = 0; t < tokens; ++t) {
    std::vector<float> row(logits.data<float>() + t * n, logits.data<float>() + (t + 1) * n);
    std::vector<int32_t> expected = BruteForceGroupRoute(row, b, n_group, topk_group, top_k);
    std::vector<int32_t> got(r.ids.data<int32_t>() + t * top_k,
                             r.ids.data<int32_t>() + (t + 1) * top_k);
    ASSERT_EQ(got, expected) << "token " << t;
    double sum = 0;
    for (int j = 0; j < top_k; ++j) sum += r.weights.data<float>()[t * top_k + j];
    EXPECT_NEAR(sum, 2.5, 1e-5);
  }
}

// ---- Against the reference ---------------------------------------------------------------------

struct RouteCase {
  const char* name;
  RouterConfig config;
  int num_experts;
  bool bias;
};

void PrintTo(const RouteCase& c, std::ostream* os) { *os << c.name; }

class MoeRouteRefTest : public ::testing::TestWithParam<RouteCase> {};

TEST_P(MoeRouteRefTest, MatchesReference) {
  const RouteCase& rc = GetParam();
  Tensor logits = RandomTensor({97, rc.num_experts}, 61, -5, 5);
  Tensor bias = rc.bias ? RandomTensor({rc.num_experts}, 62, -0.5f, 0.5f) : Tensor();
  Routing got = Route(logits, bias, rc.config);
  Routing want = RouteRef(logits, bias, rc.config);
  EXPECT_EQ(got.i(), want.i());
  EXPECT_LT(RelativeError(got.weights, want.weights), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, MoeRouteRefTest,
    ::testing::Values(
        RouteCase{
            "mixtral", {.scoring = Scoring::kSoftmax, .top_k = 2, .renormalize = true}, 8, false},
        RouteCase{"qwen3_moe",
                  {.scoring = Scoring::kSoftmax, .top_k = 8, .renormalize = true},
                  128,
                  false},
        RouteCase{"qwen2_moe", {.scoring = Scoring::kSoftmax, .top_k = 4}, 60, false},
        RouteCase{"gpt_oss", {.scoring = Scoring::kSoftmaxTopK, .top_k = 4}, 32, false},
        RouteCase{"deepseek_v3",
                  {.scoring = Scoring::kSigmoid,
                   .top_k = 8,
                   .renormalize = true,
                   .n_group = 8,
                   .topk_group = 4,
                   .routed_scaling_factor = 2.5f},
                  256,
                  true},
        RouteCase{"kimi_k2",
                  {.scoring = Scoring::kSigmoid,
                   .top_k = 8,
                   .renormalize = true,
                   .n_group = 1,
                   .topk_group = 1,
                   .routed_scaling_factor = 2.827f},
                  384,
                  true},
        RouteCase{"glm4_moe",
                  {.scoring = Scoring::kSigmoid,
                   .top_k = 8,
                   .renormalize = true,
                   .routed_scaling_factor = 2.5f},
                  160,
                  true},
        RouteCase{"minimax_m2",
                  {.scoring = Scoring::kSigmoid, .top_k = 8, .renormalize = true},
                  256,
                  true},
        RouteCase{"odd_groups",
                  {.scoring = Scoring::kSigmoid, .top_k = 3, .n_group = 7, .topk_group = 2},
                  21,
                  false}),
    [](const ::testing::TestParamInfo<RouteCase>& info) { return std::string(info.param.name); });

// ---- Validation --------------------------------------------------------------------------------

TEST(MoeRouteTest, RejectsTopKAboveExperts) {
  RouterConfig c{.top_k = 5};
  Tensor w = *Tensor::Empty({1, 5}, DType::kF32), i = *Tensor::Empty({1, 5}, DType::kI32);
  absl::Status s = MoeRoute(Row({1, 2, 3, 4}), Tensor(), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("top_k"));
}

TEST(MoeRouteTest, RejectsGroupsThatDoNotDivide) {
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 1, .n_group = 3, .topk_group = 1};
  Tensor w = *Tensor::Empty({1, 1}, DType::kF32), i = *Tensor::Empty({1, 1}, DType::kI32);
  absl::Status s = MoeRoute(Row({1, 2, 3, 4}), Tensor(), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("n_group"));
}

TEST(MoeRouteTest, RejectsTopkGroupAboveNGroup) {
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 1, .n_group = 2, .topk_group = 3};
  Tensor w = *Tensor::Empty({1, 1}, DType::kF32), i = *Tensor::Empty({1, 1}, DType::kI32);
  absl::Status s = MoeRoute(Row({1, 2, 3, 4}), Tensor(), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("topk_group"));
}

TEST(MoeRouteTest, RejectsWrongBiasLength) {
  RouterConfig c{.scoring = Scoring::kSigmoid, .top_k = 1};
  Tensor w = *Tensor::Empty({1, 1}, DType::kF32), i = *Tensor::Empty({1, 1}, DType::kI32);
  absl::Status s = MoeRoute(Row({1, 2, 3, 4}), RandomTensor({3}, 1), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("correction_bias"));
}

TEST(MoeRouteTest, RejectsWrongIdsDtype) {
  RouterConfig c{.top_k = 1};
  Tensor w = *Tensor::Empty({1, 1}, DType::kF32), i = *Tensor::Empty({1, 1}, DType::kI64);
  absl::Status s = MoeRoute(Row({1, 2}), Tensor(), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("topk_ids"));
}

TEST(MoeRouteTest, CudaTensorsAreUnimplemented) {
  // In CUDA builds these tensors go to kernels/cuda (tests/kernels/*_cuda_test.cc); the fake
  // device tensors here are host memory and must not reach a real kernel.
  if (BuiltWithCuda()) GTEST_SKIP() << "CUDA build: device tensors are served by kernels/cuda";
  RouterConfig c{.top_k = 1};
  Tensor logits = FakeCudaTensor({1, 4}, DType::kF32);
  Tensor w = FakeCudaTensor({1, 1}, DType::kF32), i = FakeCudaTensor({1, 1}, DType::kI32);
  absl::Status s = MoeRoute(logits, Tensor(), c, w, i);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CUDA"));
}

}  // namespace
}  // namespace tessera
