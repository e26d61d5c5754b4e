// Device-neutral entry points for sampling (kernels/ops.h): host logits go to
// kernels/cpu/sampling.h; logits on a CUDA device (CUDA builds) go to kernels/cuda/sampling.cu
// as a one-row batch. Thread safety: stateless.
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/sampling.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {

absl::StatusOr<SampleResult> Sample(Tensor& logits, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random) {
  if (logits.defined() && !logits.device().is_cpu()) {
#ifdef TESSERA_WITH_CUDA
    if (logits.ndim() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("Sample: logits must be [vocab_size], got ", logits.DebugString()));
    }
    Tensor rows = logits.AsStrided({1, logits.dim(0)}, {logits.dim(0), logits.stride(0)});
    const absl::Span<const int32_t> prompts[] = {prompt_tokens};
    const absl::Span<const int32_t> outputs[] = {output_tokens};
    ASSIGN_OR_RETURN(std::vector<SampleResult> results,
                     cuda::SampleRows(rows, {params}, prompts, outputs, {step}, {fallback_random}));
    return results[0];
#endif
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
