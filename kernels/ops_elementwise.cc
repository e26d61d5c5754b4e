// Device dispatch for the normalisation and elementwise operations of kernels/ops.h.
//
// Host tensors go to kernels/cpu/elementwise.h; in CUDA builds, calls with any operand on a CUDA
// device go to kernels/cuda/elementwise.cu (which rejects mixed devices with INVALID_ARGUMENT).
// Without the CUDA backend, device tensors are UNIMPLEMENTED.
// Thread safety: as the CPU kernels (stateless).

#include <initializer_list>

#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#define TESSERA_ON_CUDA(call, ...) \
  if (::tessera::AnyOnCuda({__VA_ARGS__})) return ::tessera::cuda::call
#else
#define TESSERA_ON_CUDA(call, ...) \
  do {                             \
  } while (0)
#endif

namespace tessera {

[[maybe_unused]] static bool AnyOnCuda(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t->defined() && t->device().is_cuda()) return true;
  }
  return false;
}
absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  TESSERA_ON_CUDA(RmsNorm(x, weight, eps, out), &x, &weight, &out);
  RETURN_IF_ERROR(cpu::RequireHost("RmsNorm", {{"x", &x}, {"weight", &weight}, {"out", &out}}));
  return cpu::RmsNorm(x, weight, eps, out);
}

absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  TESSERA_ON_CUDA(AddRmsNorm(residual, delta, weight, eps, out), &residual, &delta, &weight, &out);
  RETURN_IF_ERROR(cpu::RequireHost(
      "AddRmsNorm",
      {{"residual", &residual}, {"delta", &delta}, {"weight", &weight}, {"out", &out}}));
  return cpu::AddRmsNorm(residual, delta, weight, eps, out);
}

absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out) {
  TESSERA_ON_CUDA(SiluAndMul(gate_up, out), &gate_up, &out);
  RETURN_IF_ERROR(cpu::RequireHost("SiluAndMul", {{"gate_up", &gate_up}, {"out", &out}}));
  return cpu::SiluAndMul(gate_up, out);
}

absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out) {
  TESSERA_ON_CUDA(ClampedSwiGlu(gate_up, alpha, limit, out), &gate_up, &out);
  RETURN_IF_ERROR(cpu::RequireHost("ClampedSwiGlu", {{"gate_up", &gate_up}, {"out", &out}}));
  return cpu::ClampedSwiGlu(gate_up, alpha, limit, out);
}

absl::Status Softmax(Tensor& x) {
  TESSERA_ON_CUDA(Softmax(x), &x);
  RETURN_IF_ERROR(cpu::RequireHost("Softmax", {{"x", &x}}));
  return cpu::Softmax(x);
}

absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out) {
  TESSERA_ON_CUDA(Embedding(table, ids, vocab_start, vocab_size, out), &table, &ids, &out);
  RETURN_IF_ERROR(cpu::RequireHost("Embedding", {{"table", &table}, {"ids", &ids}, {"out", &out}}));
  return cpu::Embedding(table, ids, vocab_start, vocab_size, out);
}

absl::Status Axpy(float scale, const Tensor& x, Tensor& out) {
  TESSERA_ON_CUDA(Axpy(scale, x, out), &x, &out);
  RETURN_IF_ERROR(cpu::RequireHost("Axpy", {{"x", &x}, {"out", &out}}));
  return cpu::Axpy(scale, x, out);
}

}  // namespace tessera
