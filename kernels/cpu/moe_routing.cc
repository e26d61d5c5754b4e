#include "kernels/cpu/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/base/thread_pool.h"
#include "kernels/cpu/elementwise.h"

namespace tessera::cpu {
namespace {

// Indices of the k best entries of values[0, n) in rank order (RanksBefore). `order` is scratch.
void TopK(const float* values, int n, int k, std::vector<int>& order, int* out) {
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [values](int a, int b) { return RanksBefore(values[a], a, values[b], b); });
  std::copy(order.begin(), order.begin() + k, out);
}

struct Scratch {
  std::vector<float> scores, choice, group_scores;
  std::vector<int> order, groups;
  std::vector<char> keep;
};

void RouteToken(const float* logits, const float* bias, int num_experts, const RouterConfig& config,
                Scratch& s, float* weights, int32_t* ids) {
  const int k = config.top_k;
  std::vector<int> sel(k);
  switch (config.scoring) {
    case RouterConfig::Scoring::kSoftmax: {
      s.scores.assign(logits, logits + num_experts);
      float mx = -INFINITY;
      for (float v : s.scores) mx = std::max(mx, v);
      float sum = 0;
      for (float& v : s.scores) sum += (v = std::exp(v - mx));
      for (float& v : s.scores) v /= sum;
      TopK(s.scores.data(), num_experts, k, s.order, sel.data());
      for (int j = 0; j < k; ++j) weights[j] = s.scores[sel[j]];
      if (config.renormalize) {
        float total = 0;
        for (int j = 0; j < k; ++j) total += weights[j];
        for (int j = 0; j < k; ++j) weights[j] /= total;
      }
      break;
    }
    case RouterConfig::Scoring::kSoftmaxTopK: {
      TopK(logits, num_experts, k, s.order, sel.data());
      const float mx = logits[sel[0]];
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += (weights[j] = std::exp(logits[sel[j]] - mx));
      for (int j = 0; j < k; ++j) weights[j] /= sum;
      break;
    }
    case RouterConfig::Scoring::kSigmoid: {
      s.scores.resize(num_experts);
      s.choice.resize(num_experts);
      for (int e = 0; e < num_experts; ++e) {
        s.scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
        s.choice[e] = bias != nullptr ? s.scores[e] + bias[e] : s.scores[e];
      }
      if (config.n_group > 1) {
        const int g = config.n_group;
        const int per = num_experts / g;
        s.group_scores.resize(g);
        for (int gi = 0; gi < g; ++gi) {
          const float* c = s.choice.data() + gi * per;
          int top2[2];
          TopK(c, per, std::min(per, 2), s.order, top2);
          s.group_scores[gi] = per >= 2 ? c[top2[0]] + c[top2[1]] : c[top2[0]];
        }
        s.groups.resize(config.topk_group);
        TopK(s.group_scores.data(), g, config.topk_group, s.order, s.groups.data());
        s.keep.assign(g, 0);
        for (int gi : s.groups) s.keep[gi] = 1;
        for (int e = 0; e < num_experts; ++e) {
          if (!s.keep[e / per]) s.choice[e] = 0.0f;
        }
      }
      TopK(s.choice.data(), num_experts, k, s.order, sel.data());
      for (int j = 0; j < k; ++j) weights[j] = s.scores[sel[j]];
      if (config.renormalize) {
        float total = 0;
        for (int j = 0; j < k; ++j) total += weights[j];
        total += 1e-20f;
        for (int j = 0; j < k; ++j) weights[j] /= total;
      }
      break;
    }
  }
  for (int j = 0; j < k; ++j) {
    weights[j] *= config.routed_scaling_factor;
    ids[j] = sel[j];
  }
}

}  // namespace

absl::Status ValidateMoeRoute(const Tensor& logits, const Tensor& correction_bias,
                              const RouterConfig& config, const Tensor& topk_weights,
                              const Tensor& topk_ids, bool host_only) {
  if (!logits.defined() || logits.dtype() != DType::kF32 || logits.ndim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoeRoute: logits must be [num_tokens, num_experts] f32, got ", logits.DebugString()));
  }
  RETURN_IF_ERROR(RowView::Of(logits, "MoeRoute: logits").status());
  const int64_t num_tokens = logits.dim(0), num_experts = logits.dim(1);
  if (num_experts < 1 || num_experts > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoeRoute: logits ", logits.DebugString(), " has no experts"));
  }
  if (config.top_k < 1 || config.top_k > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: RouterConfig.top_k = ", config.top_k,
                                                   " must be in [1, num_experts = ", num_experts,
                                                   "]"));
  }
  const bool sigmoid = config.scoring == RouterConfig::Scoring::kSigmoid;
  if (config.n_group < 1 || num_experts % config.n_group != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoeRoute: RouterConfig.n_group = ", config.n_group,
                     " must be >= 1 and divide ", "num_experts = ", num_experts));
  }
  if (config.n_group > 1) {
    if (!sigmoid) {
      return absl::InvalidArgumentError(
          "MoeRoute: RouterConfig.n_group > 1 (group-limited routing) needs kSigmoid scoring");
    }
    if (config.topk_group < 1 || config.topk_group > config.n_group) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoeRoute: RouterConfig.topk_group = ", config.topk_group,
                       " must be in [1, n_group = ", config.n_group, "]"));
    }
  }
  if (correction_bias.defined()) {
    if (!sigmoid) {
      return absl::InvalidArgumentError(
          "MoeRoute: correction_bias is only used with kSigmoid scoring");
    }
    if (correction_bias.dtype() != DType::kF32 || correction_bias.ndim() != 1 ||
        correction_bias.dim(0) != num_experts ||
        (num_experts > 1 && correction_bias.stride(0) != 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoeRoute: correction_bias ", correction_bias.DebugString(),
                       " must be a contiguous [", num_experts, "] f32"));
    }
  }
  if (!topk_weights.defined() || topk_weights.dtype() != DType::kF32 || topk_weights.ndim() != 2 ||
      topk_weights.dim(0) != num_tokens || topk_weights.dim(1) != config.top_k) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: topk_weights must be [", num_tokens,
                                                   ", ", config.top_k, "] f32, got ",
                                                   topk_weights.DebugString()));
  }
  if (!topk_ids.defined() || topk_ids.dtype() != DType::kI32 || topk_ids.ndim() != 2 ||
      topk_ids.dim(0) != num_tokens || topk_ids.dim(1) != config.top_k) {
    return absl::InvalidArgumentError(absl::StrCat("MoeRoute: topk_ids must be [", num_tokens, ", ",
                                                   config.top_k, "] i32, got ",
                                                   topk_ids.DebugString()));
  }
  RETURN_IF_ERROR(RowView::Of(topk_weights, "MoeRoute: topk_weights").status());
  RETURN_IF_ERROR(RowView::Of(topk_ids, "MoeRoute: topk_ids").status());
  for (const Tensor* t : {&logits, &correction_bias, &topk_weights, &topk_ids}) {
    if (host_only && t->defined() && !t->device().is_cpu()) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoeRoute: ", t->DebugString(), " is not a host tensor"));
    }
  }
  return absl::OkStatus();
}

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids) {
  RETURN_IF_ERROR(ValidateMoeRoute(logits, correction_bias, config, topk_weights, topk_ids));
  ASSIGN_OR_RETURN(RowView lv, RowView::Of(logits, "logits"));
  ASSIGN_OR_RETURN(RowView wv, RowView::Of(topk_weights, "topk_weights"));
  ASSIGN_OR_RETURN(RowView iv, RowView::Of(topk_ids, "topk_ids"));
  const int num_experts = static_cast<int>(logits.dim(1));
  const float* bias = correction_bias.defined() ? correction_bias.data<float>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 16384 / num_experts);
  ParallelFor(logits.dim(0), grain, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t t = begin; t < end; ++t) {
      RouteToken(lv.Ptr<float>(t), bias, num_experts, config, scratch, wv.Ptr<float>(t),
                 iv.Ptr<int32_t>(t));
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
