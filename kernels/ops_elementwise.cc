// Device dispatch for the normalisation and elementwise operations of kernels/ops.h.
//
// Host tensors go to kernels/cpu/elementwise.h; tensors on another device return UNIMPLEMENTED
// (the CUDA backend does not provide these kernels yet). Mixed devices are INVALID_ARGUMENT.
// Thread safety: as the CPU kernels (stateless).

#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/ops.h"

namespace tessera {
absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost("RmsNorm", {{"x", &x}, {"weight", &weight}, {"out", &out}}));
  return cpu::RmsNorm(x, weight, eps, out);
}

absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost(
      "AddRmsNorm",
      {{"residual", &residual}, {"delta", &delta}, {"weight", &weight}, {"out", &out}}));
  return cpu::AddRmsNorm(residual, delta, weight, eps, out);
}

absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost("SiluAndMul", {{"gate_up", &gate_up}, {"out", &out}}));
  return cpu::SiluAndMul(gate_up, out);
}

absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost("ClampedSwiGlu", {{"gate_up", &gate_up}, {"out", &out}}));
  return cpu::ClampedSwiGlu(gate_up, alpha, limit, out);
}

absl::Status Softmax(Tensor& x) {
  RETURN_IF_ERROR(cpu::RequireHost("Softmax", {{"x", &x}}));
  return cpu::Softmax(x);
}

absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost("Embedding", {{"table", &table}, {"ids", &ids}, {"out", &out}}));
  return cpu::Embedding(table, ids, vocab_start, vocab_size, out);
}

absl::Status Axpy(float scale, const Tensor& x, Tensor& out) {
  RETURN_IF_ERROR(cpu::RequireHost("Axpy", {{"x", &x}, {"out", &out}}));
  return cpu::Axpy(scale, x, out);
}

}  // namespace tessera
