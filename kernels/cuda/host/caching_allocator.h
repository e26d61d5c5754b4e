// Caching device allocator bookkeeping, independent of CUDA (compiled in every build).
//
// The CUDA backend's allocator (kernels/cuda/cuda_device.h) is this class over cudaMalloc /
// cudaFree; tests drive it over a fake RawDeviceMemory on the CPU, so the bookkeeping is tested
// on every machine.
//
// Contract:
// - Requests are rounded up to a size class: multiples of kSmallGranularity (512 B) below
//   kLargeThreshold (1 MiB), multiples of kLargeGranularity (2 MiB) from there on; 0 bytes is one
//   512 B block (a distinct, valid pointer).
// - A freed block goes back to the free list of its (device, size class) and is handed out again
//   for the next request of that class (a "cache hit") without calling the raw allocator.
// - When the raw allocator reports RESOURCE_EXHAUSTED, every cached block of that device is
//   released and the allocation retried once; a second failure is RESOURCE_EXHAUSTED naming the
//   device, the request and the allocator's statistics.
// - Reuse is safe only when all work on a block is ordered before the next user's work (the CUDA
//   backend issues every kernel and copy of a device on that device's one stream).
// - Buffers returned by Allocate hold a pointer to the allocator: it must outlive them (the
//   process-wide CUDA allocator is never destroyed).
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/base/device.h"

namespace tessera::cuda {

// The memory a caching allocator caches: cudaMalloc/cudaFree in the CUDA backend, a fake in tests.
class RawDeviceMemory {
 public:
  virtual ~RawDeviceMemory() = default;
  // RESOURCE_EXHAUSTED when the device is out of memory; other codes for other failures.
  virtual absl::StatusOr<void*> Malloc(int device, size_t bytes) = 0;
  virtual absl::Status Free(int device, void* ptr) = 0;
};

struct AllocatorStats {
  size_t allocated_bytes = 0;        // size classes handed out now
  size_t requested_bytes = 0;        // bytes asked for by the blocks handed out now
  size_t reserved_bytes = 0;         // obtained from the raw allocator (allocated + cached)
  size_t cached_bytes = 0;           // in free lists
  size_t retained_bytes = 0;         // freed while a graph was being captured, held for it
  size_t peak_allocated_bytes = 0;
  size_t peak_reserved_bytes = 0;
  uint64_t num_allocs = 0;           // Allocate calls that succeeded
  uint64_t num_frees = 0;            // blocks returned
  uint64_t num_cache_hits = 0;       // allocations served from a free list
  uint64_t num_raw_mallocs = 0;
  uint64_t num_raw_frees = 0;
  uint64_t num_oom_retries = 0;      // raw OOMs answered by emptying the cache and retrying
  std::string ToString() const;
};

class CachingAllocatorCore {
 public:
  static constexpr size_t kSmallGranularity = 512;
  static constexpr size_t kLargeThreshold = size_t{1} << 20;
  static constexpr size_t kLargeGranularity = size_t{2} << 20;

  // `raw` is borrowed and must outlive the allocator.
  explicit CachingAllocatorCore(RawDeviceMemory* raw) : raw_(raw) {}
  CachingAllocatorCore(const CachingAllocatorCore&) = delete;
  CachingAllocatorCore& operator=(const CachingAllocatorCore&) = delete;

  // The size class of a request.
  static size_t RoundSize(size_t bytes);

  // A buffer of at least `bytes` on `device` (Buffer::size() is `bytes`). Dropping the last
  // reference returns the block to the cache.
  absl::StatusOr<std::shared_ptr<Buffer>> Allocate(Device device, size_t bytes);

  AllocatorStats Stats(int device) const;
  // Returns every cached block of every device to the raw allocator.
  absl::Status EmptyCache();
  // Number of cached blocks of one size class (tests).
  size_t CachedBlocks(int device, size_t size_class) const;

  // CUDA graph capture. A captured graph keeps addressing every block its kernels used, including
  // scratch that was freed during the capture; handing such a block to a later tensor would let a
  // replay overwrite it. Between BeginRetainingFrees(device) and EndRetainingFrees(device), blocks
  // freed on that device are therefore kept out of the free lists and returned to the caller (the
  // graph), which gives them back with ReleaseRetained once it is destroyed. One capture per
  // device at a time: a second Begin is FAILED_PRECONDITION.
  struct RetainedBlock {
    void* ptr;
    size_t size_class;
  };
  absl::Status BeginRetainingFrees(int device);
  std::vector<RetainedBlock> EndRetainingFrees(int device);
  void ReleaseRetained(int device, const std::vector<RetainedBlock>& blocks);

 private:
  void Release(int device, void* ptr, size_t size_class, size_t requested);
  absl::Status EmptyCacheLocked(int device);

  RawDeviceMemory* raw_;
  mutable std::mutex mutex_;
  std::map<int, AllocatorStats> stats_;
  std::map<int, std::map<size_t, std::vector<void*>>> free_lists_;
  std::map<int, std::vector<RetainedBlock>> retaining_;  // devices capturing a graph now
};

}  // namespace tessera::cuda
