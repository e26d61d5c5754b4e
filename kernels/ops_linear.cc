// tessera::Linear (kernels/ops.h): validation and device dispatch. CPU tensors go to
// kernels/cpu/linear.h; other devices are not implemented yet.
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/reference_linear.h"
#include "kernels/ops.h"

namespace tessera {

absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateLinearArgs(x, w, bias, out));
  if (!x.device().is_cpu()) {
    return absl::UnimplementedError(absl::StrCat("Linear on ", x.device().ToString(),
                                                 ": the CUDA backend has no Linear kernel yet"));
  }
  return cpu::LinearCpu(x, w, bias, out);
}

}  // namespace tessera
