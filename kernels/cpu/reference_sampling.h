// Plain reference for tessera::Sample, used by tests to check the optimised sampler.
//
// Implements the contract written in kernels/cpu/sampling.h step by step with no shortcuts: the
// raw log-softmax in double, penalties from explicit token counts, a full sort of the vocabulary
// by rank, then top-k / top-p / min-p prefixes and the inverse-CDF draw. It shares only the
// argument validation, the counter-based generator (cpu::SeededUniform) and the weights
// exp((l - max) / T) (cpu::SamplingWeights) with the optimised version, so with the same inputs
// both must return the same token. CPU only; slow on purpose.
// Thread safety: stateless.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::ref {

// logits: [vocab_size] f32, contiguous; modified in place by the penalties.
absl::StatusOr<SampleResult> Sample(Tensor& logits, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random);

absl::Status ValidateSamplingParams(const SamplingParams& params);

}  // namespace tessera::ref
