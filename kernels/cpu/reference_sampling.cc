// Plain reference sampler; see reference_sampling.h.
#include "kernels/cpu/reference_sampling.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "kernels/base/status.h"
#include "kernels/cpu/sampling.h"

namespace tessera::ref {

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  return cpu::ValidateSamplingParams(params);
}

absl::StatusOr<SampleResult> Sample(Tensor& logits_tensor, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random) {
  if (logits_tensor.defined() && !logits_tensor.device().is_cpu()) {
    return absl::InvalidArgumentError("reference Sample: logits must be on the host");
  }
  RETURN_IF_ERROR(cpu::ValidateSampleArgs(logits_tensor, params, prompt_tokens, output_tokens,
                                          fallback_random));
  const int64_t vocab = logits_tensor.dim(0);
  float* l = logits_tensor.data<float>();
  const std::vector<float> raw(l, l + vocab);

  // Raw log-softmax in double.
  double raw_max = -INFINITY;
  for (float x : raw) {
    if (std::isnan(x) || x == INFINITY) {
      return absl::InvalidArgumentError("reference Sample: NaN or +inf logit");
    }
    raw_max = std::max(raw_max, static_cast<double>(x));
  }
  if (raw_max == -INFINITY) return absl::InvalidArgumentError("reference Sample: all -inf");
  double raw_sum = 0.0;
  for (float x : raw) raw_sum += std::exp(static_cast<double>(x) - raw_max);
  const double lse = raw_max + std::log(raw_sum);
  auto result = [&](int32_t token) {
    return SampleResult{token, static_cast<float>(raw[token] - lse)};
  };

  // Penalties.
  std::set<int32_t> seen(prompt_tokens.begin(), prompt_tokens.end());
  seen.insert(output_tokens.begin(), output_tokens.end());
  std::map<int32_t, int> counts;
  for (int32_t t : output_tokens) ++counts[t];
  if (params.repetition_penalty != 1.0f) {
    for (int32_t t : seen) {
      l[t] = l[t] > 0.0f ? l[t] / params.repetition_penalty : l[t] * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    for (const auto& [t, c] : counts) {
      l[t] -= params.presence_penalty + params.frequency_penalty * static_cast<float>(c);
    }
  }

  int32_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (l[i] > l[best]) best = static_cast<int32_t>(i);
  }
  if (params.temperature == 0.0f) return result(best);
  const float max_logit = l[best];
  if (max_logit == -INFINITY) return absl::InvalidArgumentError("reference Sample: all -inf");

  std::vector<float> w(vocab);
  cpu::SamplingWeights(absl::MakeConstSpan(l, vocab), max_logit, params.temperature, w.data());
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  int64_t n = use_top_k ? params.top_k : vocab;
  if (params.top_p < 1.0f) {
    double z = 0.0;
    if (use_top_k) {
      for (int64_t i = 0; i < n; ++i) z += w[order[i]];
    } else {
      for (int64_t i = 0; i < vocab; ++i) z += w[i];
    }
    double cum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      cum += w[order[i]];
      if (cum >= static_cast<double>(params.top_p) * z) {
        n = i + 1;
        break;
      }
    }
  }
  std::vector<int32_t> kept;
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || w[order[i]] >= params.min_p) kept.push_back(order[i]);
  }
  std::sort(kept.begin(), kept.end());
  double total = 0.0;
  for (int32_t t : kept) total += w[t];
  const double u =
      params.seed.has_value() ? cpu::SeededUniform(*params.seed, step) : fallback_random;
  double cum = 0.0;
  int32_t last = best;
  for (int32_t t : kept) {
    if (w[t] == 0.0f) continue;
    cum += w[t];
    last = t;
    if (cum > u * total) return result(t);
  }
  return result(last);
}

}  // namespace tessera::ref
