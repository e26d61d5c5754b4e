// MoeRoute of kernels/ops.h: host tensors go to kernels/cpu/moe_routing.h (which documents the
// Hugging Face router each mode reproduces); CUDA tensors (CUDA builds) go to
// kernels/cuda/moe_routing.cu. Thread safety: stateless.

#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/moe_routing.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids) {
#ifdef TESSERA_WITH_CUDA
  if (logits.defined() && logits.device().is_cuda()) {
    return cuda::MoeRoute(logits, correction_bias, config, topk_weights, topk_ids);
  }
#endif
  RETURN_IF_ERROR(cpu::RequireHost("MoeRoute", {{"logits", &logits},
                                                {"correction_bias", &correction_bias},
                                                {"topk_weights", &topk_weights},
                                                {"topk_ids", &topk_ids}}));
  return cpu::MoeRoute(logits, correction_bias, config, topk_weights, topk_ids);
}

}  // namespace tessera
