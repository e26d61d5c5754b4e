// Tests for Sample / ValidateSamplingParams (kernels/ops.h) against hand computations and the
// plain reference in kernels/cpu/reference_sampling.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/base/tensor.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/reference_sampling.h"
#include "kernels/ops.h"

namespace tessera {
namespace {

// Caps the CPU ISA for its lifetime (also when an ASSERT returns early).
class ScopedIsa {
 public:
  explicit ScopedIsa(cpu::Isa isa) { cpu::SetIsaOverride(isa); }
  ~ScopedIsa() { cpu::SetIsaOverride(std::nullopt); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;
};

std::vector<float> RandomLogits(int64_t vocab, uint64_t seed, float spread = 4.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> v(vocab);
  for (float& x : v) x = dist(rng);
  return v;
}

// Samples from a fresh copy of `logits`.
SampleResult Draw(const std::vector<float>& logits, const SamplingParams& params, uint64_t step,
                  absl::Span<const int32_t> prompt = {}, absl::Span<const int32_t> output = {},
                  double fallback = 0.5) {
  Tensor t = Tensor::FromVector(absl::MakeConstSpan(logits), {static_cast<int64_t>(logits.size())});
  absl::StatusOr<SampleResult> r = Sample(t, params, prompt, output, step, fallback);
  CHECK(r.ok()) << r.status();
  return *r;
}

// Softmax of logits / temperature in double.
std::vector<double> Probs(const std::vector<float>& logits, double temperature = 1.0) {
  double m = -INFINITY;
  for (float x : logits) m = std::max(m, static_cast<double>(x));
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - m) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

// Token ids sorted by descending probability.
std::vector<int32_t> Ranked(const std::vector<float>& logits) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return order;
}

TEST(Sample, GreedyIsArgmax) {
  std::vector<float> logits = RandomLogits(1001, 3);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = 3;  // irrelevant for greedy
  EXPECT_EQ(Draw(logits, params, 0).token, argmax);
}

TEST(Sample, GreedyTieGoesToLowestIndex) {
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  SamplingParams params;
  params.temperature = 0.0f;
  EXPECT_EQ(Draw(logits, params, 0).token, 1);
}

TEST(Sample, LogprobIsRawLogSoftmaxBeforeProcessing) {
  std::vector<float> logits = RandomLogits(257, 4);
  const std::vector<double> p = Probs(logits);
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_k = 10;
  params.repetition_penalty = 1.3f;
  params.frequency_penalty = 0.4f;
  params.seed = 5;
  const std::vector<int32_t> prompt = {1, 2, 3}, output = {3, 3, 9};
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
    if (isa > cpu::BestSupportedIsa()) continue;
    const ScopedIsa scoped(isa);
    for (uint64_t step = 0; step < 20; ++step) {
      const SampleResult r = Draw(logits, params, step, prompt, output);
      EXPECT_NEAR(r.logprob, std::log(p[r.token]), 1e-5) << r.token << " " << cpu::IsaName(isa);
    }
  }
}

TEST(Sample, RepetitionPenaltyMatchesHandComputation) {
  Tensor t = Tensor::FromVector(std::vector<float>{2.0f, -2.0f, 1.0f, 0.5f, 3.0f}, {5});
  SamplingParams params;
  params.temperature = 0.0f;
  params.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 1, 0}, output = {1, 4};
  absl::StatusOr<SampleResult> r = Sample(t, params, prompt, output, 0, 0.5);
  ASSERT_TRUE(r.ok()) << r.status();
  const float* l = t.data<float>();
  EXPECT_FLOAT_EQ(l[0], 1.0f);   // positive: divided once, although it appears twice
  EXPECT_FLOAT_EQ(l[1], -4.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(l[2], 1.0f);   // not seen
  EXPECT_FLOAT_EQ(l[3], 0.5f);
  EXPECT_FLOAT_EQ(l[4], 1.5f);
  EXPECT_EQ(r->token, 4);  // 1.5 is the largest penalised logit
}

TEST(Sample, PresenceAndFrequencyPenaltiesApplyToOutputTokensOnly) {
  Tensor t = Tensor::FromVector(std::vector<float>{1.0f, 1.0f, 1.0f, 1.0f}, {4});
  SamplingParams params;
  params.temperature = 0.0f;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.25f;
  const std::vector<int32_t> prompt = {0}, output = {2, 2, 3, 2};
  ASSERT_TRUE(Sample(t, params, prompt, output, 0, 0.5).ok());
  const float* l = t.data<float>();
  EXPECT_FLOAT_EQ(l[0], 1.0f);                 // prompt only
  EXPECT_FLOAT_EQ(l[1], 1.0f);                 // unseen
  EXPECT_FLOAT_EQ(l[2], 1.0f - 0.5f - 0.75f);  // count 3
  EXPECT_FLOAT_EQ(l[3], 1.0f - 0.5f - 0.25f);  // count 1
}

TEST(Sample, TopKNeverReturnsExcludedTokens) {
  const std::vector<float> logits = RandomLogits(503, 6, 1.0f);
  const std::vector<int32_t> ranked = Ranked(logits);
  const std::set<int32_t> allowed(ranked.begin(), ranked.begin() + 7);
  SamplingParams params;
  params.top_k = 7;
  params.seed = 77;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 3000; ++step) {
    const int32_t token = Draw(logits, params, step).token;
    ASSERT_TRUE(allowed.count(token)) << token;
    seen.insert(token);
  }
  EXPECT_EQ(seen.size(), 7u);  // with a flat-ish distribution every allowed token shows up
}

TEST(Sample, TopPNeverReturnsExcludedTokens) {
  const std::vector<float> logits = RandomLogits(301, 7, 2.0f);
  const std::vector<double> p = Probs(logits);
  const std::vector<int32_t> ranked = Ranked(logits);
  SamplingParams params;
  params.top_p = 0.6f;
  params.seed = 8;
  std::set<int32_t> allowed;
  double cum = 0.0;
  for (int32_t t : ranked) {
    allowed.insert(t);
    cum += p[t];
    if (cum >= 0.6) break;
  }
  ASSERT_GT(allowed.size(), 2u);
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 3000; ++step) {
    const int32_t token = Draw(logits, params, step).token;
    ASSERT_TRUE(allowed.count(token)) << token;
    seen.insert(token);
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST(Sample, TinyTopPKeepsTheMostLikelyToken) {
  const std::vector<float> logits = RandomLogits(100, 9);
  SamplingParams params;
  params.top_p = 1e-6f;
  params.seed = 1;
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (uint64_t step = 0; step < 200; ++step) EXPECT_EQ(Draw(logits, params, step).token, argmax);
}

TEST(Sample, MinPNeverReturnsExcludedTokens) {
  const std::vector<float> logits = RandomLogits(400, 10, 1.5f);
  const std::vector<double> p = Probs(logits, 0.8);
  const double max_p = *std::max_element(p.begin(), p.end());
  SamplingParams params;
  params.temperature = 0.8f;
  params.min_p = 0.2f;
  params.seed = 11;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 3000; ++step) {
    const int32_t token = Draw(logits, params, step).token;
    ASSERT_GE(p[token], 0.2 * max_p * (1 - 1e-6)) << token;
    seen.insert(token);
  }
  EXPECT_GT(seen.size(), 1u);
}

TEST(Sample, SameSeedAndStepGiveTheSameTokenWhateverRunsInBetween) {
  const std::vector<float> logits = RandomLogits(1000, 12, 0.5f);
  SamplingParams params;
  params.seed = 42;
  const int32_t first = Draw(logits, params, 3).token;
  SamplingParams other = params;
  for (uint64_t s = 0; s < 50; ++s) {
    other.seed = s;
    Draw(logits, other, s);
    other.seed.reset();
    Draw(logits, other, 3, {}, {}, 0.123 + s * 0.01);
  }
  EXPECT_EQ(Draw(logits, params, 3, {}, {}, 0.999).token, first);  // fallback ignored with a seed
}

TEST(Sample, DifferentSeedsGiveDifferentTokens) {
  const std::vector<float> logits(1000, 0.0f);  // uniform
  SamplingParams params;
  std::set<int32_t> tokens;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    params.seed = seed;
    tokens.insert(Draw(logits, params, 0).token);
  }
  EXPECT_GE(tokens.size(), 15u);
}

TEST(Sample, DifferentStepsGiveDifferentTokens) {
  const std::vector<float> logits(1000, 0.0f);
  SamplingParams params;
  params.seed = 3;
  std::set<int32_t> tokens;
  for (uint64_t step = 0; step < 20; ++step) tokens.insert(Draw(logits, params, step).token);
  EXPECT_GE(tokens.size(), 15u);
}

TEST(Sample, UnseededDrawUsesFallbackRandom) {
  const std::vector<float> logits = {1.0f, 0.0f, 3.0f, 2.0f};
  SamplingParams params;
  params.top_k = 2;  // keeps tokens 2 and 3
  EXPECT_EQ(Draw(logits, params, 0, {}, {}, 0.0).token, 2);
  EXPECT_EQ(Draw(logits, params, 0, {}, {}, 0.9999).token, 3);
}

// Empirical frequencies over many seeded draws match the (processed) distribution.
struct FrequencyCase {
  std::string name;
  float temperature;
  int top_k;
};

void PrintTo(const FrequencyCase& c, std::ostream* os) { *os << c.name; }

class SampleFrequencyTest : public ::testing::TestWithParam<FrequencyCase> {};

TEST_P(SampleFrequencyTest, EmpiricalFrequenciesMatchProbabilities) {
  const FrequencyCase& c = GetParam();
  const std::vector<float> logits = {0.3f, -1.0f, 1.2f, 0.0f, 0.9f, -0.4f, 2.0f};
  std::vector<float> kept_logits = logits;
  if (c.top_k > 0) {
    const std::vector<int32_t> ranked = Ranked(logits);
    for (size_t i = c.top_k; i < ranked.size(); ++i) kept_logits[ranked[i]] = -INFINITY;
  }
  const std::vector<double> p = Probs(kept_logits, c.temperature);
  SamplingParams params;
  params.temperature = c.temperature;
  params.top_k = c.top_k;
  params.seed = 2024;
  constexpr int kDraws = 100000;
  std::vector<int> counts(logits.size(), 0);
  for (uint64_t step = 0; step < kDraws; ++step) ++counts[Draw(logits, params, step).token];
  for (size_t i = 0; i < logits.size(); ++i) {
    const double freq = static_cast<double>(counts[i]) / kDraws;
    // 5 standard deviations of a binomial proportion, plus a little.
    const double tol = 5.0 * std::sqrt(p[i] * (1 - p[i]) / kDraws) + 1e-4;
    EXPECT_NEAR(freq, p[i], tol) << "token " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Distributions, SampleFrequencyTest,
                         ::testing::Values(FrequencyCase{"t1", 1.0f, 0},
                                           FrequencyCase{"t0_5", 0.5f, 0},
                                           FrequencyCase{"t1_5_top4", 1.5f, 4}),
                         [](const auto& info) { return info.param.name; });

// The optimised sampler against the reference on the same inputs: same token, same logprob,
// same penalised logits.
struct RefCase {
  std::string name;
  int64_t vocab;
  SamplingParams params;
  float spread;
};

void PrintTo(const RefCase& c, std::ostream* os) { *os << c.name; }

class SampleVsReferenceTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(SampleVsReferenceTest, SameTokenAsReference) {
  const RefCase& c = GetParam();
  const std::vector<float> logits = RandomLogits(c.vocab, 99, c.spread);
  std::vector<int32_t> prompt, output;
  std::mt19937 rng(5);
  for (int i = 0; i < 40; ++i) prompt.push_back(static_cast<int32_t>(rng() % c.vocab));
  for (int i = 0; i < 25; ++i) output.push_back(static_cast<int32_t>(rng() % c.vocab));
  const int draws = c.vocab > 10000 ? 12 : 200;
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx512}) {
    if (isa > cpu::BestSupportedIsa()) continue;
    const ScopedIsa scoped(isa);
    for (int step = 0; step < draws; ++step) {
      Tensor a = Tensor::FromVector(absl::MakeConstSpan(logits), {c.vocab});
      Tensor b = Tensor::FromVector(absl::MakeConstSpan(logits), {c.vocab});
      SamplingParams params = c.params;
      const double fallback = (step * 0.618034) - std::floor(step * 0.618034);
      absl::StatusOr<SampleResult> got = Sample(a, params, prompt, output, step, fallback);
      absl::StatusOr<SampleResult> want = ref::Sample(b, params, prompt, output, step, fallback);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_EQ(got->token, want->token) << "step " << step << " " << cpu::IsaName(isa);
      EXPECT_NEAR(got->logprob, want->logprob, 1e-4);
      for (int64_t i = 0; i < c.vocab; ++i) {
        ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << "logit " << i;
      }
    }
  }
}

std::vector<RefCase> RefCases() {
  std::vector<RefCase> cases;
  for (int64_t vocab : {1, 7, 1001, 151936}) {
    for (int variant = 0; variant < 6; ++variant) {
      RefCase c;
      c.vocab = vocab;
      c.spread = variant % 2 == 0 ? 3.0f : 0.3f;
      SamplingParams& p = c.params;
      p.seed = variant == 5 ? std::nullopt : std::optional<uint64_t>(1000 + variant);
      switch (variant) {
        case 0:
          c.name = "plain";
          break;
        case 1:
          c.name = "top_k";
          p.top_k = 50;
          p.temperature = 0.8f;
          break;
        case 2:
          c.name = "top_p";
          p.top_p = 0.9f;
          p.repetition_penalty = 1.2f;
          break;
        case 3:
          c.name = "top_k_top_p_min_p";
          p.top_k = 40;
          p.top_p = 0.7f;
          p.min_p = 0.05f;
          p.temperature = 1.3f;
          break;
        case 4:
          c.name = "min_p_penalties";
          p.min_p = 0.1f;
          p.presence_penalty = 0.5f;
          p.frequency_penalty = -0.3f;
          break;
        case 5:
          c.name = "unseeded_top_p_small_temperature";
          p.top_p = 0.95f;
          p.temperature = 0.05f;
          break;
      }
      c.name += "_v" + std::to_string(vocab);
      cases.push_back(c);
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Configs, SampleVsReferenceTest, ::testing::ValuesIn(RefCases()),
                         [](const auto& info) { return info.param.name; });

struct InvalidCase {
  std::string field;
  std::function<void(SamplingParams&)> mutate;
};

void PrintTo(const InvalidCase& c, std::ostream* os) { *os << c.field; }

class InvalidSamplingParamsTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidSamplingParamsTest, RejectedWithFieldName) {
  SamplingParams params;
  ASSERT_TRUE(ValidateSamplingParams(params).ok());
  GetParam().mutate(params);
  const absl::Status status = ValidateSamplingParams(params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(GetParam().field), absl::string_view::npos) << status;
  Tensor t = Tensor::FromVector(std::vector<float>{0.0f, 1.0f}, {2});
  EXPECT_FALSE(Sample(t, params, {}, {}, 0, 0.5).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Fields, InvalidSamplingParamsTest,
    ::testing::Values(
        InvalidCase{"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
        InvalidCase{"temperature", [](SamplingParams& p) { p.temperature = NAN; }},
        InvalidCase{"top_k", [](SamplingParams& p) { p.top_k = -2; }},
        InvalidCase{"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
        InvalidCase{"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }},
        InvalidCase{"min_p", [](SamplingParams& p) { p.min_p = -0.5f; }},
        InvalidCase{"min_p", [](SamplingParams& p) { p.min_p = NAN; }},
        InvalidCase{"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
        InvalidCase{"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5f; }},
        InvalidCase{"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -3.0f; }}),
    [](const auto& info) { return info.param.field + "_" + std::to_string(info.index); });

TEST(Sample, RejectsTokenIdOutsideVocabulary) {
  Tensor t = Tensor::FromVector(std::vector<float>{0.0f, 1.0f, 2.0f}, {3});
  const std::vector<int32_t> prompt = {0, 3};
  const absl::Status status = Sample(t, SamplingParams{}, prompt, {}, 0, 0.5).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("prompt_tokens[1]"), absl::string_view::npos) << status;
}

TEST(Sample, RejectsNanLogits) {
  Tensor t = Tensor::FromVector(std::vector<float>{0.0f, NAN, 2.0f}, {3});
  const absl::Status status = Sample(t, SamplingParams{}, {}, {}, 0, 0.5).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("logits[1]"), absl::string_view::npos) << status;
}

TEST(Sample, RejectsFallbackRandomOutsideUnitInterval) {
  Tensor t = Tensor::FromVector(std::vector<float>{0.0f, 1.0f}, {2});
  EXPECT_FALSE(Sample(t, SamplingParams{}, {}, {}, 0, 1.0).ok());
}

}  // namespace
}  // namespace tessera
