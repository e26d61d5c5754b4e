// Tests for HostArena (kernels/base/host_arena.h): alignment, packing into chunks, dedicated
// chunks for large requests, and buffers keeping their chunk alive after the arena is gone.
#include "kernels/base/host_arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace tessera {
namespace {

uintptr_t Addr(const std::shared_ptr<Buffer>& b) { return reinterpret_cast<uintptr_t>(b->data()); }

TEST(HostArenaTest, PacksSmallBuffersIntoOneHugePageAlignedChunk) {
  HostArena arena(size_t{4} << 20);
  std::vector<std::shared_ptr<Buffer>> buffers;
  for (size_t bytes : {100u, 1u, 4096u, 12345u}) {
    absl::StatusOr<std::shared_ptr<Buffer>> b = arena.Allocate(bytes);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(Addr(*b) % 64, 0u);
    EXPECT_EQ((*b)->size(), bytes);
    EXPECT_TRUE((*b)->device().is_cpu());
    buffers.push_back(*b);
  }
  EXPECT_EQ(Addr(buffers[0]) % HostArena::kHugePageBytes, 0u);  // chunk start
  for (size_t i = 1; i < buffers.size(); ++i) {
    EXPECT_GE(Addr(buffers[i]), Addr(buffers[i - 1]) + buffers[i - 1]->size());  // no overlap
  }
  EXPECT_EQ(arena.mapped_bytes(), size_t{4} << 20);
  EXPECT_EQ(arena.allocated_bytes(), 100u + 1u + 4096u + 12345u);
}

TEST(HostArenaTest, StartsANewChunkWhenTheCurrentOneIsFullAndSizesLargeOnesToFit) {
  HostArena arena(size_t{2} << 20);
  auto a = arena.Allocate(size_t{3} << 19);  // 1.5 MiB: fits the first chunk
  auto b = arena.Allocate(size_t{3} << 19);  // does not fit the remaining 0.5 MiB
  auto c = arena.Allocate(size_t{5} << 20);  // larger than a chunk: a 6 MiB chunk of its own
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(Addr(*b) % HostArena::kHugePageBytes, 0u);
  EXPECT_EQ(Addr(*c) % HostArena::kHugePageBytes, 0u);
  EXPECT_EQ(arena.mapped_bytes(), (size_t{2} << 20) * 2 + (size_t{6} << 20));
  std::memset((*c)->data(), 0x5a, (*c)->size());  // the whole buffer is writable
  EXPECT_EQ(static_cast<unsigned char*>((*c)->data())[(*c)->size() - 1], 0x5a);
}

TEST(HostArenaTest, BuffersOutliveTheArena) {
  std::shared_ptr<Buffer> kept;
  {
    HostArena arena;
    auto b = arena.Allocate(1000);
    ASSERT_TRUE(b.ok());
    std::memset((*b)->data(), 7, 1000);
    kept = *b;
  }
  EXPECT_EQ(static_cast<unsigned char*>(kept->data())[999], 7);
}

}  // namespace
}  // namespace tessera
