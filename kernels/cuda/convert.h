// Element-type conversion on the GPU (weights arrive as bf16/f16/fp8 and are widened on device).
// Stream-ordered; no host synchronisation. CUDA builds only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/base/dtype.h"

namespace tessera::cuda {

// dst[i] = float(src[i]) for i < count; src of dtype `from` (bf16, f16, f8_e4m3, f8_e5m2, f32).
absl::Status ConvertToFloat(const void* src, DType from, float* dst, size_t count,
                            cudaStream_t stream);

}  // namespace tessera::cuda
