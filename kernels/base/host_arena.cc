#include "kernels/base/host_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tessera {

namespace {

size_t RoundUp(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

// One 2 MiB-aligned anonymous mapping advised for huge pages.
struct HostArena::Chunk {
  char* base = nullptr;
  size_t size = 0;
  ~Chunk() {
    if (base != nullptr) munmap(base, size);
  }
};

HostArena::HostArena(size_t chunk_bytes) : chunk_bytes_(RoundUp(chunk_bytes, kHugePageBytes)) {}

absl::StatusOr<std::shared_ptr<Buffer>> HostArena::Allocate(size_t bytes) {
  constexpr size_t kAlign = 64;
  absl::MutexLock lock(&mu_);
  if (current_ == nullptr || RoundUp(offset_, kAlign) + bytes > current_->size) {
    const size_t size = RoundUp(std::max(chunk_bytes_, bytes), kHugePageBytes);
    // Over-map by one huge page, then trim both ends so the chunk starts on a 2 MiB boundary.
    void* raw = mmap(nullptr, size + kHugePageBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat("out of host memory mapping ", size,
                                                       " bytes for weights: ",
                                                       std::strerror(errno)));
    }
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = RoundUp(start, kHugePageBytes);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t end = start + size + kHugePageBytes;
    if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
    auto chunk = std::make_shared<Chunk>();
    chunk->base = reinterpret_cast<char*>(aligned);
    chunk->size = size;
    // Advice only: without THP the chunk is ordinary pages.
    (void)madvise(chunk->base, size, MADV_HUGEPAGE);
    current_ = std::move(chunk);
    offset_ = 0;
    mapped_ += size;
  }
  offset_ = RoundUp(offset_, kAlign);
  char* data = current_->base + offset_;
  offset_ += bytes;
  allocated_ += bytes;
  return WrapBuffer(data, bytes, Device::Cpu(), current_);
}

size_t HostArena::allocated_bytes() const {
  absl::MutexLock lock(&mu_);
  return allocated_;
}

size_t HostArena::mapped_bytes() const {
  absl::MutexLock lock(&mu_);
  return mapped_;
}

}  // namespace tessera
