// CUDA, cuBLAS(Lt) and kernel-launch errors as absl::Status with the failing expression, file
// and line. CUDA builds only. Thread safety: stateless.
//
//   CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));   // cudaError_t
//   CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));  // cublasStatus_t
//   CUDA_RETURN_IF_LAUNCH_FAILED();               // after <<<...>>>: cudaGetLastError()
// Out-of-memory codes map to RESOURCE_EXHAUSTED, invalid values to INVALID_ARGUMENT, a missing
// device or driver to UNAVAILABLE, everything else to INTERNAL.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace tessera::cuda {

absl::Status ToStatus(cudaError_t error, const char* expr, const char* file, int line);
absl::Status ToStatus(cublasStatus_t status, const char* expr, const char* file, int line);

}  // namespace tessera::cuda

#define CUDA_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                \
    const cudaError_t tessera_cuda_err_ = (expr);                                     \
    if (tessera_cuda_err_ != cudaSuccess)                                             \
      return ::tessera::cuda::ToStatus(tessera_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                \
    const cublasStatus_t tessera_cublas_st_ = (expr);                                 \
    if (tessera_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                  \
      return ::tessera::cuda::ToStatus(tessera_cublas_st_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUDA_RETURN_IF_LAUNCH_FAILED() CUDA_RETURN_IF_ERROR(cudaGetLastError())
