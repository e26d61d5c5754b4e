// MoeRoute of kernels/ops.h: host tensors go to kernels/cpu/moe_routing.h (which documents the
// Hugging Face router each mode reproduces); other devices return UNIMPLEMENTED (the CUDA
// backend has no routing kernel yet). Thread safety: stateless.

#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/moe_routing.h"
#include "kernels/ops.h"

namespace tessera {

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids) {
  RETURN_IF_ERROR(cpu::RequireHost("MoeRoute", {{"logits", &logits},
                                                {"correction_bias", &correction_bias},
                                                {"topk_weights", &topk_weights},
                                                {"topk_ids", &topk_ids}}));
  return cpu::MoeRoute(logits, correction_bias, config, topk_weights, topk_ids);
}

}  // namespace tessera
