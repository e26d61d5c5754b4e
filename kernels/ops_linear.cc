// tessera::Linear (kernels/ops.h): validation and device dispatch. CPU tensors go to
// kernels/cpu/linear.h; CUDA tensors (CUDA builds) to kernels/cuda/linear.cu.
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
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

absl::StatusOr<ActivationDType> ParseActivationDType(absl::string_view text,
                                                     absl::string_view flag) {
  if (text == "f32" || text == "float32") return ActivationDType::kF32;
  if (text == "bf16" || text == "bfloat16") return ActivationDType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " '", text, "': expected f32 or bf16"));
}

void SetActivationDType(ActivationDType dtype) {
  if (dtype == ActivationDType::kBF16 && !cpu::Bf16DotGemmSupported()) {
    LOG(WARNING) << "--activation-dtype bf16: this CPU lacks AVX512_BF16 (or AVX-512 is capped "
                    "by TESSERA_CPU_ISA); matmuls keep f32 activations";
  }
  cpu::SetBf16DotGemm(dtype == ActivationDType::kBF16);
}

absl::Status ApplyActivationDTypeFlag(absl::string_view text, absl::string_view flag) {
  if (text.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const ActivationDType dtype, ParseActivationDType(text, flag));
  SetActivationDType(dtype);
  return absl::OkStatus();
}

ActivationDType GetActivationDType() {
  return cpu::Bf16DotGemmEnabled() ? ActivationDType::kBF16 : ActivationDType::kF32;
}

bool Bf16ActivationsSupported() { return cpu::Bf16DotGemmSupported(); }

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
