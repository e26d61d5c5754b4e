// tessera::Linear (kernels/ops.h): validation and device dispatch. CPU tensors go to
// kernels/cpu/linear.h; CUDA tensors (CUDA builds) to kernels/cuda/linear.cu.
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/reference_linear.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {

absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateLinearArgs(x, w, bias, out));
  if (!x.device().is_cpu()) {
#ifdef TESSERA_WITH_CUDA
    return cuda::Linear(x, w, bias, out);
#endif
    return absl::UnimplementedError(absl::StrCat("Linear on ", x.device().ToString(),
                                                 ": the CUDA backend has no Linear kernel yet"));
  }
  return cpu::LinearCpu(x, w, bias, out);
}

absl::Status LinearGroup(absl::Span<const LinearProblem> problems) {
  static const Tensor kNoBias;
  for (size_t i = 0; i < problems.size(); ++i) {
    const LinearProblem& p = problems[i];
    if (p.x == nullptr || p.w == nullptr || p.out == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("LinearGroup: problem ", i, " lacks x, w or out"));
    }
    absl::Status st = cpu::ValidateLinearArgs(*p.x, *p.w, p.bias ? *p.bias : kNoBias, *p.out);
    if (!st.ok()) return Annotate(st, absl::StrCat("LinearGroup problem ", i));
    if (!p.x->device().is_cpu()) {
#ifdef TESSERA_WITH_CUDA
      return cuda::LinearGroup(problems);
#endif
      return absl::UnimplementedError(absl::StrCat(
          "LinearGroup on ", p.x->device().ToString(), ": the CUDA backend has no kernel yet"));
    }
  }
  return cpu::LinearGroupCpu(problems);
}

}  // namespace tessera
