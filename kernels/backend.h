// Backend registry: which device backends this build has and whether a device is present.
//
// CPU is always available. In CUDA builds, InitBackends() registers the CUDA caching allocator and
// copier with kernels/base/device.h so that Tensor::Empty(..., Device::Cuda(i)) and
// Tensor::ToDevice work. Callable from any thread; initialisation happens once.
#pragma once

#include "absl/status/status.h"

namespace tessera {

// True when Tessera was compiled with the CUDA backend (nvcc and NCCL present at build time).
bool BuiltWithCuda();
// Number of usable CUDA devices (0 in CPU-only builds or on machines without a GPU).
int CudaDeviceCount();
// Registers the available backends; idempotent.
absl::Status InitBackends();

}  // namespace tessera
