// CPU implementation of tessera::Sample and tessera::ValidateSamplingParams (kernels/ops.h), and
// the pieces of the sampling contract that the plain reference (reference_sampling.h) shares.
//
// Contract, for one row of logits [vocab_size] f32 (contiguous):
//  1. logprob: log_softmax of the raw logits, taken before any processing (vLLM "raw" logprobs).
//     A NaN or +inf logit, or no finite logit at all, is INVALID_ARGUMENT.
//  2. Penalties, written into `logits` in place: repetition penalty once per distinct token of
//     prompt + output (logit > 0 ? logit / p : logit * p); then for each distinct output token
//     with count c: logit -= presence * 1 + frequency * c. Token ids outside [0, vocab_size) are
//     INVALID_ARGUMENT naming prompt_tokens[i] / output_tokens[i].
//  3. temperature == 0: greedy argmax of the penalised logits, lowest index on ties.
//  4. Otherwise weights w_i = exp((l_i - max_l) / temperature) (f32, SamplingWeights). Tokens are
//  ranked by
//     (logit descending, index ascending). top-k keeps the first k of that order; top-p keeps the
//     smallest prefix of the remaining order whose cumulative weight (double, in rank order) is
//     >= top_p * Z, where Z is the weight of the top-k set (summed in rank order) or, without
//     top-k, of the whole vocabulary (summed in index order); min-p then drops tokens with
//     w_i < min_p (w of the most likely token is 1). At least one token always remains.
//  5. Draw: u in [0, 1) is SeededUniform(seed, step) with a seed, else `fallback_random`. Walking
//     the kept tokens in ascending index order and accumulating their weights (double), the first
//     token whose running sum exceeds u * (total kept weight) is chosen.
// Cost: a few O(vocab) passes; top-k / top-p rank only the candidate tokens whose logit is within
// 8·T (then 16·T, 32·T, ...) of the maximum (partial sort for top-k), so peaked distributions are
// cheap and only near-flat ones with top-p sort most of the vocabulary.
// Thread safety: stateless; concurrent calls on different logits are safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cpu {

// A uniform number in [0, 1) that depends only on (seed, step): SplitMix64 finalisers of the
// two, top 53 bits.
double SeededUniform(uint64_t seed, uint64_t step);

absl::Status ValidateSamplingParams(const SamplingParams& params);

// Checks logits (defined, f32, 1-D, contiguous, non-empty), token ids and fallback_random.
absl::Status ValidateSampleArgs(const Tensor& logits, const SamplingParams& params,
                                absl::Span<const int32_t> prompt_tokens,
                                absl::Span<const int32_t> output_tokens, double fallback_random);

// log(sum(exp(logits))) over the raw logits (max, then a sum of exp(l - max): vectorised with
// AVX-512 when available, relative error ~1e-6). INVALID_ARGUMENT for NaN / +inf / all -inf.
absl::StatusOr<double> RawLogSumExp(absl::Span<const float> logits);

// Sampling weights w[i] = exp((logits[i] - max_logit) / temperature) (step 4): AVX-512 when
// cpu::ActiveIsa() allows (relative error ~1e-6, 0 below e^-87), std::exp otherwise. The draw
// therefore depends on the ISA as well as on (seed, step). w: [logits.size()].
void SamplingWeights(absl::Span<const float> logits, float max_logit, float temperature, float* w);

// Step 2 of the contract, in place.
void ApplyPenalties(absl::Span<float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens);

absl::StatusOr<SampleResult> Sample(Tensor& logits, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random);

}  // namespace tessera::cpu
