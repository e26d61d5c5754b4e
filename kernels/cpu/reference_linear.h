// Plain reference for tessera::Linear, used by tests and benchmarks to check the optimised
// kernels.
//
// out = x · Wᵀ (+ bias), every weight dtype dequantised element by element (f32, bf16, f16, and
// fp8 e4m3 with block scales: w_real[i][j] = w[i][j] * scale_inv[i / block_n][j / block_k]),
// accumulated in double; an f8_e4m3 weight without scale_inv has scale 1; MXFP4 weights
// (LinearWeight::mx_scales) are decoded code by code with std::ldexp, as transformers does. Same
// contract, shapes and validation as tessera::Linear in kernels/ops.h; CPU tensors only. Single-threaded and slow on purpose. Thread safe.
#pragma once

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::ref {

// x: [m, k] f32 (rows may be strided); w.weight: [n, k]; bias: undefined or [n] f32;
// out: [m, n] f32 contiguous.
absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out);

}  // namespace tessera::ref

namespace tessera::cpu {

// Checks the operands of Linear (shapes, dtypes, devices, scale shape) with INVALID_ARGUMENT
// naming the operand at fault. Shared by tessera::Linear and tessera::ref::Linear.
absl::Status ValidateLinearArgs(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                const Tensor& out);

}  // namespace tessera::cpu
