#include "kernels/backend.h"

#include <mutex>

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

namespace tessera {

bool BuiltWithCuda() {
#ifdef TESSERA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int CudaDeviceCount() {
#ifdef TESSERA_WITH_CUDA
  return cuda::DeviceCount();
#else
  return 0;
#endif
}

absl::Status InitBackends() {
  static std::once_flag once;
  static absl::Status status;
  std::call_once(once, [] {
#ifdef TESSERA_WITH_CUDA
    status = cuda::RegisterCudaBackend();
#endif
  });
  return status;
}

}  // namespace tessera
