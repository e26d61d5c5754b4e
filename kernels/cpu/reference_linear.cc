// Plain double-accumulating reference for Linear (see reference_linear.h).
#include "kernels/cpu/reference_linear.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/dtype.h"
#include "kernels/base/status.h"

namespace tessera::cpu {
namespace {
absl::Status ValidateLinearOperands(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                    const Tensor& out);
absl::Status ValidateMxfp4LinearArgs(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                     const Tensor& out);
}  // namespace

absl::Status ValidateLinearArgs(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                const Tensor& out) {
  if (!x.defined()) return absl::InvalidArgumentError("Linear: input x is undefined");
  if (!w.weight.defined()) return absl::InvalidArgumentError("Linear: weight is undefined");
  if (!out.defined()) return absl::InvalidArgumentError("Linear: output out is undefined");
  if (x.ndim() != 2 || x.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: input x must be a 2-D f32 tensor [m, k], got ", x.DebugString()));
  }
  if (x.dim(1) > 1 && x.stride(1) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: input x must have contiguous rows (inner stride 1), got ", x.DebugString()));
  }
  if (x.dim(0) > 1 && x.stride(0) < x.dim(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: input x rows overlap (row stride ", x.stride(0), " < k ",
                     x.dim(1), ")"));
  }
  const Tensor& wt = w.weight;
  if (wt.ndim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: weight must be 2-D [n, k], got ", wt.DebugString()));
  }
  if (w.is_mxfp4()) return ValidateMxfp4LinearArgs(x, w, bias, out);
  if (wt.dtype() != DType::kF32 && wt.dtype() != DType::kBF16 && wt.dtype() != DType::kF16 &&
      wt.dtype() != DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: weight dtype ", DTypeName(wt.dtype()),
        " is not supported (expected f32, bf16, f16 or f8_e4m3)"));
  }
  if (!wt.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: weight must be contiguous, got ", wt.DebugString()));
  }
  const int64_t k = x.dim(1), n = wt.dim(0);
  if (wt.dim(1) != k) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: weight ", wt.DebugString(),
                                                   " has in_features ", wt.dim(1),
                                                   " but input x has k = ", k));
  }
  if (w.scale_inv.defined()) {
    if (wt.dtype() != DType::kF8E4M3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Linear: scale_inv is only supported with f8_e4m3 weights, weight is ",
          DTypeName(wt.dtype())));
    }
    if (w.block_n <= 0 || w.block_k <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("Linear: block sizes must be positive, got ",
                                                     w.block_n, " x ", w.block_k));
    }
    const int64_t sn = (n + w.block_n - 1) / w.block_n, sk = (k + w.block_k - 1) / w.block_k;
    const Tensor& s = w.scale_inv;
    if (s.dtype() != DType::kF32 || s.ndim() != 2 || s.dim(0) != sn || s.dim(1) != sk ||
        !s.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Linear: scale_inv must be contiguous f32 [", sn, ", ", sk, "] for weight [", n, ", ",
          k, "] with blocks ", w.block_n, " x ", w.block_k, ", got ", s.DebugString()));
    }
  }
  return ValidateLinearOperands(x, w, bias, out);
}

namespace {

// Bias, output and device checks shared by every weight format (n = w.out_features()).
absl::Status ValidateLinearOperands(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                    const Tensor& out) {
  const Tensor& wt = w.weight;
  const int64_t m = x.dim(0), n = wt.dim(0);
  if (bias.defined()) {
    if (bias.dtype() != DType::kF32 || bias.ndim() != 1 || bias.dim(0) != n ||
        (n > 1 && bias.stride(0) != 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Linear: bias must be contiguous f32 [", n, "], got ", bias.DebugString()));
    }
  }
  if (out.dtype() != DType::kF32 || out.ndim() != 2 || out.dim(0) != m || out.dim(1) != n ||
      !out.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: output out must be contiguous f32 [",
                                                   m, ", ", n, "], got ", out.DebugString()));
  }
  const Device dev = x.device();
  if (!(wt.device() == dev) || !(out.device() == dev) || (bias.defined() && !(bias.device() == dev)) ||
      (w.scale_inv.defined() && !(w.scale_inv.device() == dev)) ||
      (w.mx_scales.defined() && !(w.mx_scales.device() == dev))) {
    return absl::InvalidArgumentError(
        absl::StrCat("Linear: operands are on different devices (x on ", dev.ToString(),
                     ", weight on ", wt.device().ToString(), ", out on ", out.device().ToString(),
                     ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateMxfp4LinearArgs(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                     const Tensor& out) {
  const Tensor& wt = w.weight;
  const Tensor& s = w.mx_scales;
  if (wt.dtype() != DType::kU8 || !wt.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: an MXFP4 weight (mx_scales set) must be contiguous u8 [n, k / 2] (two e2m1 codes "
        "per byte), got ", wt.DebugString()));
  }
  if (w.scale_inv.defined()) {
    return absl::InvalidArgumentError(
        "Linear: an MXFP4 weight cannot also have fp8 scale_inv");
  }
  const int64_t n = wt.dim(0), k = 2 * wt.dim(1);
  if (x.dim(1) != k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: MXFP4 weight ", wt.DebugString(), " holds in_features ", k,
        " (two per byte) but input x has k = ", x.dim(1)));
  }
  if (k % kMxfp4BlockSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: MXFP4 in_features ", k, " is not a multiple of the ", kMxfp4BlockSize,
        "-element scale block"));
  }
  if (s.dtype() != DType::kU8 || s.ndim() != 2 || s.dim(0) != n ||
      s.dim(1) != k / kMxfp4BlockSize || !s.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear: mx_scales must be contiguous u8 [", n, ", ", k / kMxfp4BlockSize,
        "] (one E8M0 exponent per ", kMxfp4BlockSize, " weights) for an MXFP4 weight [", n, ", ",
        k, "], got ", s.DebugString()));
  }
  return ValidateLinearOperands(x, w, bias, out);
}

}  // namespace
}  // namespace tessera::cpu

namespace tessera::ref {

absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateLinearArgs(x, w, bias, out));
  if (!x.device().is_cpu()) {
    return absl::UnimplementedError("ref::Linear: CPU tensors only");
  }
  const int64_t m = x.dim(0), k = x.dim(1), n = w.weight.dim(0);
  const float* xd = static_cast<const float*>(x.raw_data());
  const int64_t ldx = m > 1 ? x.stride(0) : k;
  const float* scale = w.scale_inv.defined() ? w.scale_inv.data<float>() : nullptr;
  const int64_t scale_cols = w.scale_inv.defined() ? w.scale_inv.dim(1) : 0;
  float* od = out.data<float>();
  std::vector<double> row(static_cast<size_t>(k));
  const char* wd = static_cast<const char*>(w.weight.raw_data());
  const size_t esize = w.weight.element_size();
  // MXFP4 (OCP MX): e2m1 magnitudes by the low 3 bits of a code, bit 3 the sign.
  static constexpr double kE2M1[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
  const uint8_t* mx = w.is_mxfp4() ? w.mx_scales.data<uint8_t>() : nullptr;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < k; ++c) {
      if (mx != nullptr) {
        const uint8_t byte = reinterpret_cast<const uint8_t*>(wd)[(j * k + c) / 2];
        const int code = c % 2 == 0 ? byte & 0xF : byte >> 4;
        const double mag = kE2M1[code & 7];
        const int exponent = static_cast<int>(mx[j * (k / kMxfp4BlockSize) + c / kMxfp4BlockSize]) - 127;
        row[c] = std::ldexp((code & 8) != 0 ? -mag : mag, exponent);
        continue;
      }
      float v;
      ConvertBuffer(wd + (j * k + c) * esize, w.weight.dtype(), &v, DType::kF32, 1);
      double real = v;
      if (scale != nullptr) real *= scale[(j / w.block_n) * scale_cols + c / w.block_k];
      row[c] = real;
    }
    const double b = bias.defined() ? static_cast<double>(bias.data<float>()[j]) : 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = xd + i * ldx;
      double acc = 0.0;
      for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(xr[c]) * row[c];
      od[i * n + j] = static_cast<float>(acc + b);
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera::ref
