// CUDA device layer: error conversion, RAII streams/events, and a caching device allocator.
//
// Compiled only in CUDA builds. Every CUDA runtime error becomes an absl::Status carrying the
// file and line of the call (CUDA_RETURN_IF_ERROR). The caching allocator keeps freed blocks per
// device in size-rounded free lists (no managed memory) and reports statistics; it is thread safe.
// RegisterCudaBackend() plugs it into kernels/base/device.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/base/device.h"

namespace tessera::cuda {

absl::Status ToStatus(cudaError_t error, const char* expr, const char* file, int line);

#define CUDA_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                               \
    cudaError_t tessera_cuda_err_ = (expr);                                          \
    if (tessera_cuda_err_ != cudaSuccess)                                            \
      return ::tessera::cuda::ToStatus(tessera_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Number of CUDA devices; 0 when there is no driver or no GPU (never an error).
int DeviceCount();

// Owns a non-blocking cudaStream_t on one device. Move-only.
class Stream {
 public:
  static absl::StatusOr<Stream> Create(int device);
  Stream(Stream&& other) noexcept : device_(other.device_), stream_(other.stream_) {
    other.stream_ = nullptr;
  }
  Stream& operator=(Stream&& other) noexcept;
  ~Stream();
  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  absl::Status Synchronize() const;

 private:
  Stream(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
};

// Owns a cudaEvent_t. Move-only.
class Event {
 public:
  static absl::StatusOr<Event> Create(bool timing = false);
  Event(Event&& other) noexcept : event_(other.event_) { other.event_ = nullptr; }
  Event& operator=(Event&& other) noexcept;
  ~Event();
  absl::Status Record(const Stream& stream);
  absl::Status Synchronize() const;
  // Milliseconds between two recorded timing events.
  static absl::StatusOr<float> ElapsedMs(const Event& start, const Event& end);
  cudaEvent_t get() const { return event_; }

 private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

struct AllocatorStats {
  size_t allocated_bytes = 0;       // handed out to tensors now
  size_t reserved_bytes = 0;        // obtained from cudaMalloc (allocated + cached)
  size_t peak_allocated_bytes = 0;
  uint64_t num_allocs = 0;
  uint64_t num_cache_hits = 0;
  uint64_t num_cuda_mallocs = 0;
};

// Caching allocator: sizes are rounded up (512 B granularity below 1 MiB, 2 MiB above) and freed
// blocks are kept for reuse; EmptyCache() returns them to the driver. When cudaMalloc fails the
// cache is emptied and the allocation retried once before RESOURCE_EXHAUSTED.
class CachingAllocator final : public DeviceAllocator {
 public:
  static CachingAllocator& Get();
  absl::StatusOr<std::shared_ptr<Buffer>> Allocate(Device device, size_t bytes) override;
  AllocatorStats Stats(int device) const;
  absl::Status EmptyCache();
  static size_t RoundSize(size_t bytes);

 private:
  void Release(int device, void* ptr, size_t rounded);
  mutable std::mutex mutex_;
  std::map<int, AllocatorStats> stats_;
  std::map<int, std::multimap<size_t, void*>> free_blocks_;
};

// Registers the caching allocator and a host<->device copier with kernels/base/device.h.
absl::Status RegisterCudaBackend();

}  // namespace tessera::cuda
