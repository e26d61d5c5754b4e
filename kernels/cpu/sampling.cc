// CPU sampling; see sampling.h.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/sampling_kernels.h"

namespace tessera::cpu {
namespace {

uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

absl::Status CheckTokens(absl::Span<const int32_t> tokens, int64_t vocab, absl::string_view name) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("Sample: ", name, "[", i, "] = ", tokens[i],
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

// Rank order: larger logit first, lower index on ties.
struct RankLess {
  const float* l;
  bool operator()(int32_t a, int32_t b) const { return l[a] > l[b] || (l[a] == l[b] && a < b); }
};

}  // namespace

double SeededUniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ SplitMix64(step + 0x632BE59BD9B4E019ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("SamplingParams.temperature must be finite and >= 0, got ", p.temperature));
  }
  if (p.top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SamplingParams.top_k must be -1 or 0 (disabled) or positive, got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SamplingParams.top_p must be in (0, 1], got ", p.top_p));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SamplingParams.min_p must be in [0, 1], got ", p.min_p));
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SamplingParams.repetition_penalty must be finite and > 0, got ", p.repetition_penalty));
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SamplingParams.presence_penalty must be in [-2, 2], got ", p.presence_penalty));
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SamplingParams.frequency_penalty must be in [-2, 2], got ", p.frequency_penalty));
  }
  return absl::OkStatus();
}

absl::Status ValidateSampleArgs(const Tensor& logits, const SamplingParams& params,
                                absl::Span<const int32_t> prompt_tokens,
                                absl::Span<const int32_t> output_tokens, double fallback_random) {
  RETURN_IF_ERROR(cpu::ValidateSamplingParams(params));
  if (!logits.defined() || logits.dtype() != DType::kF32 || logits.ndim() != 1 ||
      logits.dim(0) == 0 || (logits.dim(0) > 1 && logits.stride(0) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: logits must be a non-empty contiguous f32 [vocab_size], got ",
                     logits.defined() ? logits.DebugString() : "undefined"));
  }
  const int64_t vocab = logits.dim(0);
  RETURN_IF_ERROR(CheckTokens(prompt_tokens, vocab, "prompt_tokens"));
  RETURN_IF_ERROR(CheckTokens(output_tokens, vocab, "output_tokens"));
  if (!params.seed.has_value() && !(fallback_random >= 0.0 && fallback_random < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: fallback_random must be in [0, 1), got ", fallback_random));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> RawLogSumExp(absl::Span<const float> logits) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    if (std::isnan(l) || l == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Sample: logits[", i, "] = ", l, " is not a valid logit"));
    }
    max_logit = std::max(max_logit, l);
  }
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    return absl::InvalidArgumentError("Sample: every logit is -inf");
  }
  double sum = 0.0;
  if (ActiveIsa() == Isa::kAvx512) {
    sum = sampling_internal::SumExpAvx512(logits.data(), static_cast<int64_t>(logits.size()),
                                          max_logit);
  } else {
    for (const float l : logits) sum += std::exp(l - max_logit);
  }
  return static_cast<double>(max_logit) + std::log(sum);
}

void SamplingWeights(absl::Span<const float> logits, float max_logit, float temperature, float* w) {
  const int64_t n = static_cast<int64_t>(logits.size());
  if (ActiveIsa() == Isa::kAvx512) {
    sampling_internal::WeightsAvx512(logits.data(), n, max_logit, temperature, w);
    return;
  }
  for (int64_t i = 0; i < n; ++i) w[i] = std::exp((logits[i] - max_logit) / temperature);
}

void ApplyPenalties(absl::Span<float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens) {
  if (params.repetition_penalty != 1.0f) {
    std::vector<int32_t> seen(prompt_tokens.begin(), prompt_tokens.end());
    seen.insert(seen.end(), output_tokens.begin(), output_tokens.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    const float p = params.repetition_penalty;
    for (const int32_t t : seen) logits[t] = logits[t] > 0.0f ? logits[t] / p : logits[t] * p;
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    std::vector<int32_t> out(output_tokens.begin(), output_tokens.end());
    std::sort(out.begin(), out.end());
    for (size_t i = 0; i < out.size();) {
      size_t j = i;
      while (j < out.size() && out[j] == out[i]) ++j;
      const float count = static_cast<float>(j - i);
      logits[out[i]] -= params.presence_penalty + params.frequency_penalty * count;
      i = j;
    }
  }
}

absl::StatusOr<SampleResult> Sample(Tensor& logits_tensor, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random) {
  RETURN_IF_ERROR(
      ValidateSampleArgs(logits_tensor, params, prompt_tokens, output_tokens, fallback_random));
  const int64_t vocab = logits_tensor.dim(0);
  float* l = logits_tensor.data<float>();
  const absl::Span<float> logits(l, static_cast<size_t>(vocab));
  ASSIGN_OR_RETURN(const double lse, RawLogSumExp(logits));

  // Raw values of the tokens the penalties change, for the logprob of the chosen token.
  std::vector<std::pair<int32_t, float>> raw;
  const bool penalised = params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f ||
                         params.frequency_penalty != 0.0f;
  if (penalised) {
    for (const auto tokens : {prompt_tokens, output_tokens}) {
      for (const int32_t t : tokens) raw.emplace_back(t, l[t]);
    }
    std::sort(raw.begin(), raw.end());
    ApplyPenalties(logits, params, prompt_tokens, output_tokens);
  }
  auto result = [&](int32_t token) {
    float raw_logit = l[token];
    auto it = std::lower_bound(raw.begin(), raw.end(), std::make_pair(token, -INFINITY));
    if (it != raw.end() && it->first == token) raw_logit = it->second;
    return SampleResult{token, static_cast<float>(raw_logit - lse)};
  };

  int32_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (l[i] > l[best]) best = static_cast<int32_t>(i);
  }
  if (params.temperature == 0.0f) return result(best);
  const float max_logit = l[best];
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    return absl::InvalidArgumentError("Sample: every logit is -inf after the penalties");
  }

  const float temperature = params.temperature;
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const int64_t k = use_top_k ? params.top_k : vocab;
  const bool use_top_p = params.top_p < 1.0f;
  const double u = params.seed.has_value() ? SeededUniform(*params.seed, step) : fallback_random;
  thread_local std::vector<float> w;
  w.resize(static_cast<size_t>(vocab));
  SamplingWeights(logits, max_logit, temperature, w.data());
  auto weight = [&](int64_t i) { return w[i]; };

  if (!use_top_k && !use_top_p) {
    // No ranking needed: the kept set is {w_i >= min_p}, drawn in index order.
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[i] >= params.min_p) total += w[i];
    }
    const double target = u * total;
    double cum = 0.0;
    int32_t last = best;
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[i] < params.min_p || w[i] == 0.0f) continue;
      cum += w[i];
      last = static_cast<int32_t>(i);
      if (cum > target) return result(last);
    }
    return result(last);
  }

  // Z over the whole vocabulary (index order) when top-p runs without top-k.
  double z_all = 0.0;
  if (!use_top_k) {
    for (int64_t i = 0; i < vocab; ++i) z_all += weight(i);
  }
  // Candidates: every token with logit >= cutoff, a set closed under the rank order. Lower the
  // cutoff until it holds the top-k set, or enough weight for top-p.
  thread_local std::vector<int32_t> cand;
  for (const float spread : {8.0f, 16.0f, 32.0f, 64.0f, 128.0f, INFINITY}) {
    const float cutoff = spread == INFINITY ? -INFINITY : max_logit - spread * temperature;
    cand.clear();
    double mass = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (l[i] >= cutoff) {
        cand.push_back(static_cast<int32_t>(i));
        if (!use_top_k) mass += weight(i);
      }
    }
    if (spread == INFINITY) break;
    if (use_top_k ? static_cast<int64_t>(cand.size()) >= k
                  : mass >= static_cast<double>(params.top_p) * z_all + 1e-6 * z_all) {
      break;
    }
  }
  const RankLess less{l};
  int64_t n = std::min<int64_t>(k, static_cast<int64_t>(cand.size()));
  if (n < static_cast<int64_t>(cand.size())) {
    std::partial_sort(cand.begin(), cand.begin() + n, cand.end(), less);
  } else {
    std::sort(cand.begin(), cand.end(), less);
  }
  if (use_top_p) {
    double z = z_all;
    if (use_top_k) {
      z = 0.0;
      for (int64_t i = 0; i < n; ++i) z += weight(cand[i]);
    }
    const double threshold = static_cast<double>(params.top_p) * z;
    double cum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      cum += weight(cand[i]);
      if (cum >= threshold) {
        n = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    int64_t kept = 1;
    while (kept < n && weight(cand[kept]) >= params.min_p) ++kept;
    n = kept;
  }
  std::sort(cand.begin(), cand.begin() + n);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += weight(cand[i]);
  const double target = u * total;
  double cum = 0.0;
  int32_t last = best;
  for (int64_t i = 0; i < n; ++i) {
    const float wi = weight(cand[i]);
    if (wi == 0.0f) continue;
    cum += wi;
    last = cand[i];
    if (cum > target) return result(last);
  }
  return result(last);
}

}  // namespace tessera::cpu
