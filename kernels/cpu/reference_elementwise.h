// Plain reference implementations (namespace tessera::ref) of the elementwise, RoPE and
// MoE-routing operations of kernels/ops.h, with the same signatures and contracts.
//
// Written for clarity, not speed: one thread, scalar loops, accumulation in double where the
// optimised kernels accumulate in f32, so tests can compare the two with a relative tolerance.
// RoPE recomputes every angle from the cache's config in double precision (ignoring the
// cache's tables); routing re-implements the Hugging Face router semantics directly.
// Thread safety: stateless.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::ref {

absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out);
absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out);
absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out);
absl::Status Softmax(Tensor& x);
absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out);
absl::Status Axpy(float scale, const Tensor& x, Tensor& out);

// RoPE: the inverse frequencies [rotary_dim / 2] and cos/sin multiplier of `config`, computed
// in double from the formulas (no f32 rounding steps), and ApplyRope using them.
std::vector<double> RopeInvFreq(const RopeConfig& config);
double RopeAttentionScaling(const RopeConfig& config);
absl::Status ApplyRope(const RopeCache& cache, const Tensor& positions, Tensor& x);

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids);

}  // namespace tessera::ref
