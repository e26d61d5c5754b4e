#include "kernels/cuda/convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {
namespace {

template <typename T>
__device__ inline float Widen(T v);
template <>
__device__ inline float Widen<float>(float v) { return v; }
template <>
__device__ inline float Widen<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ inline float Widen<__half>(__half v) { return __half2float(v); }
template <>
__device__ inline float Widen<__nv_fp8_e4m3>(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
template <>
__device__ inline float Widen<__nv_fp8_e5m2>(__nv_fp8_e5m2 v) { return static_cast<float>(v); }

template <typename T>
__global__ void ConvertKernel(const T* __restrict__ src, float* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = Widen<T>(src[i]);
  }
}

template <typename T>
absl::Status Launch(const void* src, float* dst, size_t n, cudaStream_t stream) {
  if (n == 0) return absl::OkStatus();
  const int threads = 256;
  const size_t blocks = (n + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  ConvertKernel<T><<<grid, threads, 0, stream>>>(static_cast<const T*>(src), dst, n);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status ConvertToFloat(const void* src, DType from, float* dst, size_t count,
                            cudaStream_t stream) {
  switch (from) {
    case DType::kF32: return Launch<float>(src, dst, count, stream);
    case DType::kBF16: return Launch<__nv_bfloat16>(src, dst, count, stream);
    case DType::kF16: return Launch<__half>(src, dst, count, stream);
    case DType::kF8E4M3: return Launch<__nv_fp8_e4m3>(src, dst, count, stream);
    case DType::kF8E5M2: return Launch<__nv_fp8_e5m2>(src, dst, count, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("ConvertToFloat: unsupported source dtype ", DTypeName(from)));
  }
}

}  // namespace tessera::cuda
