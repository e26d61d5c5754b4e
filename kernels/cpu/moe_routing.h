// CPU MoE router for kernels/ops.h MoeRoute: expert selection and weights per token, with the
// semantics of the Hugging Face transformers routers.
//
// - Scoring::kSoftmax (MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock, Qwen3MoeSparseMoeBlock):
//   probs = softmax(logits) in f32; top-k of probs; when `renormalize` (Mixtral always,
//   Qwen3-MoE / Qwen2-MoE per norm_topk_prob) weights = probs / sum(selected probs).
// - Scoring::kSoftmaxTopK (GptOssTopKRouter): top-k of the logits, weights = softmax over the k
//   selected logits (`renormalize` is ignored: they already sum to 1).
// - Scoring::kSigmoid (DeepseekV3TopkRouter / MoEGate, Glm4MoeTopkRouter, Kimi K2, MiniMax-M2):
//   scores = sigmoid(logits); choice = scores + correction_bias (bias optional). With
//   n_group > 1 the experts form n_group equal groups, a group's score is the sum of its top-2
//   choice values (its only value when a group has one expert), the topk_group best groups are
//   kept and the choice of every expert of the other groups is set to 0.0 -- exactly HF's
//   masked_fill(~mask, 0.0) (vLLM/SGLang use -inf; the two differ only when fewer than top_k
//   kept experts have a positive choice). Top-k over the (masked) choice; weights = the unbiased
//   scores of the selected; when `renormalize`, weights / (sum + 1e-20) (MiniMaxM2 divides by
//   the plain sum; the 1e-20 is below half an ulp of any sum above ~1e-12, so they agree).
// In every mode the final weights are multiplied by routed_scaling_factor (Mixtral, Qwen and
// gpt-oss configs use 1). Selection ranks by the mode's selection value (probs, logits or masked
// choice) in descending order; ties go to the lower expert (or group) index; NaN ranks first, as
// in torch.topk. The outputs list the selected experts in that order.
// correction_bias and n_group > 1 are accepted with kSigmoid only.
//
// Thread safety: pure functions; many tokens are split over ThreadPool::Default().
#pragma once

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cpu {

// logits: [num_tokens, num_experts] f32; correction_bias: undefined or [num_experts] f32;
// topk_weights: [num_tokens, top_k] f32; topk_ids: [num_tokens, top_k] i32. INVALID_ARGUMENT
// naming the operand or RouterConfig field at fault. host_only = false (the CUDA backend)
// accepts tensors on any device.
absl::Status ValidateMoeRoute(const Tensor& logits, const Tensor& correction_bias,
                              const RouterConfig& config, const Tensor& topk_weights,
                              const Tensor& topk_ids, bool host_only = true);

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids);

// True when expert (value a, index ia) ranks before (value b, index ib): larger first, NaN
// first, ties to the lower index. A strict weak ordering.
inline bool RanksBefore(float a, int ia, float b, int ib) {
  const bool nan_a = a != a, nan_b = b != b;
  if (nan_a != nan_b) return nan_a;
  if (!nan_a && a != b) return a > b;
  return ia < ib;
}

}  // namespace tessera::cpu
