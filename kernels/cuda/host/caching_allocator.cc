#include "kernels/cuda/host/caching_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera::cuda {

std::string AllocatorStats::ToString() const {
  return absl::StrCat("allocated ", allocated_bytes, " B, reserved ", reserved_bytes,
                      " B, cached ", cached_bytes, " B, peak allocated ", peak_allocated_bytes,
                      " B, ", num_allocs, " allocs, ", num_cache_hits, " cache hits, ",
                      num_raw_mallocs, " raw mallocs");
}

size_t CachingAllocatorCore::RoundSize(size_t bytes) {
  if (bytes == 0) return kSmallGranularity;
  if (bytes < kLargeThreshold) {
    return (bytes + kSmallGranularity - 1) / kSmallGranularity * kSmallGranularity;
  }
  return (bytes + kLargeGranularity - 1) / kLargeGranularity * kLargeGranularity;
}

absl::StatusOr<std::shared_ptr<Buffer>> CachingAllocatorCore::Allocate(Device device,
                                                                       size_t bytes) {
  const size_t size_class = RoundSize(bytes);
  const int index = device.index;
  void* ptr = nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  AllocatorStats& stats = stats_[index];
  std::vector<void*>& free_list = free_lists_[index][size_class];
  if (!free_list.empty()) {
    ptr = free_list.back();
    free_list.pop_back();
    ++stats.num_cache_hits;
    stats.cached_bytes -= size_class;
  } else {
    absl::StatusOr<void*> raw = raw_->Malloc(index, size_class);
    if (!raw.ok() && absl::IsResourceExhausted(raw.status()) && stats.cached_bytes > 0) {
      ++stats.num_oom_retries;
      if (absl::Status s = EmptyCacheLocked(index); !s.ok()) return s;
      raw = raw_->Malloc(index, size_class);
    }
    if (!raw.ok()) {
      return absl::Status(
          raw.status().code(),
          absl::StrCat("allocating ", bytes, " bytes (size class ", size_class, ") on ",
                       device.ToString(), " failed: ", raw.status().message(),
                       " [allocator: ", stats.ToString(),
                       "]; lower --max-num-seqs / the KV cache fraction or use more devices"));
    }
    ptr = *raw;
    ++stats.num_raw_mallocs;
    stats.reserved_bytes += size_class;
    stats.peak_reserved_bytes = std::max(stats.peak_reserved_bytes, stats.reserved_bytes);
  }
  ++stats.num_allocs;
  stats.allocated_bytes += size_class;
  stats.requested_bytes += bytes;
  stats.peak_allocated_bytes = std::max(stats.peak_allocated_bytes, stats.allocated_bytes);
  return std::make_shared<Buffer>(
      ptr, bytes, device,
      [this, index, size_class, bytes](void* p) { Release(index, p, size_class, bytes); });
}

void CachingAllocatorCore::Release(int device, void* ptr, size_t size_class, size_t requested) {
  std::lock_guard<std::mutex> lock(mutex_);
  AllocatorStats& stats = stats_[device];
  CHECK_GE(stats.allocated_bytes, size_class) << "caching allocator: double free";
  stats.allocated_bytes -= size_class;
  stats.requested_bytes -= requested;
  ++stats.num_frees;
  auto retaining = retaining_.find(device);
  if (retaining != retaining_.end()) {
    stats.retained_bytes += size_class;
    retaining->second.push_back({ptr, size_class});
    return;
  }
  stats.cached_bytes += size_class;
  free_lists_[device][size_class].push_back(ptr);
}

absl::Status CachingAllocatorCore::BeginRetainingFrees(int device) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (retaining_.count(device) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda:", device, " is already capturing a graph; captures on one device cannot nest"));
  }
  retaining_[device];
  return absl::OkStatus();
}

std::vector<CachingAllocatorCore::RetainedBlock> CachingAllocatorCore::EndRetainingFrees(
    int device) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = retaining_.find(device);
  if (it == retaining_.end()) return {};
  std::vector<RetainedBlock> blocks = std::move(it->second);
  retaining_.erase(it);
  return blocks;
}

void CachingAllocatorCore::ReleaseRetained(int device, const std::vector<RetainedBlock>& blocks) {
  std::lock_guard<std::mutex> lock(mutex_);
  AllocatorStats& stats = stats_[device];
  for (const RetainedBlock& b : blocks) {
    CHECK_GE(stats.retained_bytes, b.size_class) << "caching allocator: retained block twice";
    stats.retained_bytes -= b.size_class;
    stats.cached_bytes += b.size_class;
    free_lists_[device][b.size_class].push_back(b.ptr);
  }
}

AllocatorStats CachingAllocatorCore::Stats(int device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = stats_.find(device);
  return it == stats_.end() ? AllocatorStats{} : it->second;
}

size_t CachingAllocatorCore::CachedBlocks(int device, size_t size_class) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_lists_.find(device);
  if (it == free_lists_.end()) return 0;
  auto jt = it->second.find(size_class);
  return jt == it->second.end() ? 0 : jt->second.size();
}

absl::Status CachingAllocatorCore::EmptyCacheLocked(int device) {
  AllocatorStats& stats = stats_[device];
  absl::Status first_error;
  for (auto& [size_class, blocks] : free_lists_[device]) {
    while (!blocks.empty()) {
      void* ptr = blocks.back();
      blocks.pop_back();
      stats.cached_bytes -= size_class;
      stats.reserved_bytes -= size_class;
      ++stats.num_raw_frees;
      absl::Status s = raw_->Free(device, ptr);
      if (!s.ok() && first_error.ok()) first_error = s;
    }
  }
  return first_error;
}

absl::Status CachingAllocatorCore::EmptyCache() {
  std::lock_guard<std::mutex> lock(mutex_);
  absl::Status first_error;
  for (auto& [device, unused] : free_lists_) {
    absl::Status s = EmptyCacheLocked(device);
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

}  // namespace tessera::cuda
