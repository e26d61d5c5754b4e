// HostArena: long-lived host memory (model weights) packed into large chunks backed by
// transparent huge pages.
//
// Decode on the CPU streams every weight once per token. With 4 KiB pages the GEMV takes a TLB
// miss every 4 KiB of weights; packing the weights into 2 MiB-aligned chunks advised with
// MADV_HUGEPAGE lets the kernel back them with 2 MiB pages (where THP is enabled as "always" or
// "madvise"), which made the bf16 GEMV stream 1.3-1.6x faster on the CI machine
// (docs/performance.md). Where THP is off the memory is ordinary 4 KiB pages: same behaviour,
// no gain.
//
// Contract: Allocate(bytes) returns a 64-byte aligned CPU buffer of `bytes`, carved from the
// current chunk or a new one (a chunk is max(chunk_bytes, bytes) rounded up to 2 MiB; the unused
// tail of a chunk is never touched, so it costs address space, not memory). A chunk is unmapped
// when the arena and every buffer carved from it are gone. Memory is not zeroed by the arena
// (fresh anonymous pages read as zero).
//
// Thread safety: Allocate may be called concurrently.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/base/device.h"

namespace tessera {

class HostArena {
 public:
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  explicit HostArena(size_t chunk_bytes = size_t{64} << 20);
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  // RESOURCE_EXHAUSTED naming the size when the kernel refuses the mapping.
  absl::StatusOr<std::shared_ptr<Buffer>> Allocate(size_t bytes);

  // Bytes handed out so far (sum of the requests, before alignment).
  size_t allocated_bytes() const;
  // Address space mapped for chunks so far.
  size_t mapped_bytes() const;

 private:
  struct Chunk;

  const size_t chunk_bytes_;
  mutable absl::Mutex mu_;
  std::shared_ptr<Chunk> current_ ABSL_GUARDED_BY(mu_);
  size_t offset_ ABSL_GUARDED_BY(mu_) = 0;
  size_t allocated_ ABSL_GUARDED_BY(mu_) = 0;
  size_t mapped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tessera
