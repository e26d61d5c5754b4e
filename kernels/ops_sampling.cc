// Device-neutral entry points for sampling (kernels/ops.h): host logits go to
// kernels/cpu/sampling.h; logits on a CUDA device are UNIMPLEMENTED until the CUDA backend
// provides a sampler. Thread safety: stateless.
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/sampling.h"
#include "kernels/ops.h"

namespace tessera {

absl::StatusOr<SampleResult> Sample(Tensor& logits, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random) {
  if (logits.defined() && !logits.device().is_cpu()) {
    return absl::UnimplementedError(absl::StrCat(
        "Sample: logits on ", logits.device().ToString(),
        " are not supported: the CUDA backend (kernels/cuda) has no Sample kernel yet"));
  }
  return cpu::Sample(logits, params, prompt_tokens, output_tokens, step, fallback_random);
}

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  return cpu::ValidateSamplingParams(params);
}

}  // namespace tessera
