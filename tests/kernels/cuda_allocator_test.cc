// Bookkeeping of the CUDA caching allocator (kernels/cuda/host/caching_allocator.h) over a fake
// raw allocator, so it runs on every machine (label cpu).
#include "kernels/cuda/host/caching_allocator.h"

#include <cstdlib>
#include <map>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::cuda {
namespace {

// Host memory pretending to be a device with `capacity` bytes.
class FakeDeviceMemory : public RawDeviceMemory {
 public:
  explicit FakeDeviceMemory(size_t capacity) : capacity_(capacity) {}
  ~FakeDeviceMemory() override { EXPECT_TRUE(live_.empty()) << live_.size() << " blocks leaked"; }
  absl::StatusOr<void*> Malloc(int /*device*/, size_t bytes) override {
    ++mallocs;
    if (used_ + bytes > capacity_) return absl::ResourceExhaustedError("fake device is full");
    void* p = std::malloc(bytes);
    used_ += bytes;
    live_[p] = bytes;
    return p;
  }
  absl::Status Free(int /*device*/, void* ptr) override {
    auto it = live_.find(ptr);
    if (it == live_.end()) return absl::InternalError("free of an unknown pointer");
    used_ -= it->second;
    live_.erase(it);
    std::free(ptr);
    ++frees;
    return absl::OkStatus();
  }
  size_t used() const { return used_; }
  int mallocs = 0, frees = 0;

 private:
  size_t capacity_;
  size_t used_ = 0;
  std::map<void*, size_t> live_;
};

constexpr size_t kMiB = size_t{1} << 20;

TEST(CachingAllocatorCore, RoundsSmallRequestsTo512AndLargeTo2MiB) {
  EXPECT_EQ(CachingAllocatorCore::RoundSize(0), 512u);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(1), 512u);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(512), 512u);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(513), 1024u);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(kMiB - 1), kMiB);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(kMiB), 2 * kMiB);
  EXPECT_EQ(CachingAllocatorCore::RoundSize(2 * kMiB + 1), 4 * kMiB);
}

TEST(CachingAllocatorCore, FreedBlockIsReusedForTheSameSizeClass) {
  FakeDeviceMemory raw(64 * kMiB);
  {
    CachingAllocatorCore alloc(&raw);
    void* first = nullptr;
    {
      auto a = alloc.Allocate(Device::Cuda(0), 1000);
      ASSERT_TRUE(a.ok()) << a.status();
      first = (*a)->data();
      EXPECT_EQ((*a)->size(), 1000u);
    }
    auto b = alloc.Allocate(Device::Cuda(0), 900);  // same 1024 B class
    ASSERT_TRUE(b.ok());
    EXPECT_EQ((*b)->data(), first);
    const AllocatorStats s = alloc.Stats(0);
    EXPECT_EQ(s.num_allocs, 2u);
    EXPECT_EQ(s.num_cache_hits, 1u);
    EXPECT_EQ(s.num_raw_mallocs, 1u);
    EXPECT_EQ(raw.mallocs, 1);
    b->reset();
    ASSERT_TRUE(alloc.EmptyCache().ok());
  }
}

TEST(CachingAllocatorCore, DifferentSizeClassesDoNotShareBlocks) {
  FakeDeviceMemory raw(64 * kMiB);
  CachingAllocatorCore alloc(&raw);
  { auto a = alloc.Allocate(Device::Cuda(0), 512); ASSERT_TRUE(a.ok()); }
  auto b = alloc.Allocate(Device::Cuda(0), 2048);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(alloc.Stats(0).num_cache_hits, 0u);
  EXPECT_EQ(alloc.CachedBlocks(0, 512), 1u);
  b->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

TEST(CachingAllocatorCore, StatisticsTrackInUseReservedAndPeak) {
  FakeDeviceMemory raw(64 * kMiB);
  CachingAllocatorCore alloc(&raw);
  auto a = alloc.Allocate(Device::Cuda(0), 3 * kMiB);  // 4 MiB class
  auto b = alloc.Allocate(Device::Cuda(0), 100);       // 512 B class
  ASSERT_TRUE(a.ok() && b.ok());
  AllocatorStats s = alloc.Stats(0);
  EXPECT_EQ(s.allocated_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.requested_bytes, 3 * kMiB + 100);
  EXPECT_EQ(s.reserved_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.cached_bytes, 0u);
  a->reset();
  s = alloc.Stats(0);
  EXPECT_EQ(s.allocated_bytes, 512u);
  EXPECT_EQ(s.cached_bytes, 4 * kMiB);
  EXPECT_EQ(s.reserved_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.peak_allocated_bytes, 4 * kMiB + 512);
  EXPECT_EQ(s.num_frees, 1u);
  b->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
  s = alloc.Stats(0);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.num_raw_frees, 2u);
  EXPECT_EQ(raw.used(), 0u);
}

TEST(CachingAllocatorCore, DevicesKeepSeparateStatisticsAndCaches) {
  FakeDeviceMemory raw(64 * kMiB);
  CachingAllocatorCore alloc(&raw);
  { auto a = alloc.Allocate(Device::Cuda(0), 4096); ASSERT_TRUE(a.ok()); }
  auto b = alloc.Allocate(Device::Cuda(1), 4096);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->device(), Device::Cuda(1));
  EXPECT_EQ(alloc.Stats(1).num_cache_hits, 0u);
  EXPECT_EQ(alloc.Stats(0).cached_bytes, 4096u);
  EXPECT_EQ(alloc.Stats(1).allocated_bytes, 4096u);
  b->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

TEST(CachingAllocatorCore, OutOfMemoryEmptiesTheCacheAndRetriesOnce) {
  FakeDeviceMemory raw(8 * kMiB);
  CachingAllocatorCore alloc(&raw);
  { auto a = alloc.Allocate(Device::Cuda(0), 6 * kMiB); ASSERT_TRUE(a.ok()); }  // cached
  auto b = alloc.Allocate(Device::Cuda(0), 4 * kMiB);  // needs the cached 6 MiB freed
  ASSERT_TRUE(b.ok()) << b.status();
  const AllocatorStats s = alloc.Stats(0);
  EXPECT_EQ(s.num_oom_retries, 1u);
  EXPECT_EQ(s.reserved_bytes, 4 * kMiB);
  EXPECT_EQ(s.cached_bytes, 0u);
  b->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

TEST(CachingAllocatorCore, OutOfMemoryAfterRetryNamesDeviceAndRequest) {
  FakeDeviceMemory raw(4 * kMiB);
  CachingAllocatorCore alloc(&raw);
  auto a = alloc.Allocate(Device::Cuda(0), 16 * kMiB);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(a.status()));
  EXPECT_NE(a.status().message().find("cuda:0"), absl::string_view::npos) << a.status();
  EXPECT_NE(a.status().message().find(std::to_string(16 * kMiB)), absl::string_view::npos);
  EXPECT_EQ(alloc.Stats(0).num_allocs, 0u);
}

TEST(CachingAllocatorCore, ZeroByteAllocationsAreDistinctPointers) {
  FakeDeviceMemory raw(kMiB);
  CachingAllocatorCore alloc(&raw);
  auto a = alloc.Allocate(Device::Cuda(0), 0);
  auto b = alloc.Allocate(Device::Cuda(0), 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->data(), (*b)->data());
  a->reset();
  b->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

TEST(CachingAllocatorCore, ConcurrentAllocationsKeepCountsConsistent) {
  FakeDeviceMemory raw(256 * kMiB);
  CachingAllocatorCore alloc(&raw);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&alloc, t] {
      for (int i = 0; i < 200; ++i) {
        auto a = alloc.Allocate(Device::Cuda(0), 512 * (1 + (i + t) % 7));
        ASSERT_TRUE(a.ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  const AllocatorStats s = alloc.Stats(0);
  EXPECT_EQ(s.num_allocs, 800u);
  EXPECT_EQ(s.num_frees, 800u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.num_cache_hits + s.num_raw_mallocs, 800u);
  EXPECT_LE(s.num_raw_mallocs, 4u * 7u);  // at most one block per size class per thread
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

}  // namespace
}  // namespace tessera::cuda

namespace tessera::cuda {
namespace {

TEST(CachingAllocatorCore, BlocksFreedDuringACaptureAreNotReusedUntilReleased) {
  FakeDeviceMemory raw(64 * kMiB);
  CachingAllocatorCore alloc(&raw);
  ASSERT_TRUE(alloc.BeginRetainingFrees(0).ok());
  void* scratch_ptr = nullptr;
  {
    auto scratch = alloc.Allocate(Device::Cuda(0), 4096);  // a captured kernel's scratch
    ASSERT_TRUE(scratch.ok());
    scratch_ptr = (*scratch)->data();
  }
  std::vector<CachingAllocatorCore::RetainedBlock> retained = alloc.EndRetainingFrees(0);
  ASSERT_EQ(retained.size(), 1u);
  EXPECT_EQ(retained[0].ptr, scratch_ptr);
  EXPECT_EQ(alloc.Stats(0).retained_bytes, 4096u);
  EXPECT_EQ(alloc.Stats(0).cached_bytes, 0u);
  // While the graph lives, a new tensor of the same size gets another block.
  auto other = alloc.Allocate(Device::Cuda(0), 4096);
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)->data(), scratch_ptr);
  // Destroying the graph returns the block to the cache.
  alloc.ReleaseRetained(0, retained);
  EXPECT_EQ(alloc.Stats(0).retained_bytes, 0u);
  EXPECT_EQ(alloc.CachedBlocks(0, 4096), 1u);
  auto again = alloc.Allocate(Device::Cuda(0), 4096);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->data(), scratch_ptr);
  other->reset();
  again->reset();
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

TEST(CachingAllocatorCore, RetainingIsPerDeviceAndDoesNotNest) {
  FakeDeviceMemory raw(64 * kMiB);
  CachingAllocatorCore alloc(&raw);
  ASSERT_TRUE(alloc.BeginRetainingFrees(0).ok());
  EXPECT_EQ(alloc.BeginRetainingFrees(0).code(), absl::StatusCode::kFailedPrecondition);
  { auto b = alloc.Allocate(Device::Cuda(1), 512); ASSERT_TRUE(b.ok()); }  // device 1: cached
  EXPECT_EQ(alloc.CachedBlocks(1, 512), 1u);
  EXPECT_TRUE(alloc.EndRetainingFrees(0).empty());
  ASSERT_TRUE(alloc.EmptyCache().ok());
}

}  // namespace
}  // namespace tessera::cuda
