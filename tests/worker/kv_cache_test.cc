// Tests for worker/kv_cache.h: cache geometry, aliased (MLA) value views, block allocator.
#include "worker/kv_cache.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(KvCacheTest, ShapesFollowSpecs) {
  std::vector<LayerKvSpec> specs = {{2, 8, 8, false}, {3, 5, 7, false}};
  auto cache = KvCache::Create(specs, /*num_blocks=*/4, /*block_size=*/3);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->num_layers(), 2);
  EXPECT_EQ(cache->k_cache(1).shape(), (Shape{4, 3, 3, 5}));
  EXPECT_EQ(cache->v_cache(1).shape(), (Shape{4, 3, 3, 7}));
  EXPECT_EQ(cache->nbytes(), 4 * 3 * (2 * 8 * 2 + 3 * 5 + 3 * 7) * 4);
}

TEST(KvCacheTest, AliasedValueIsLeadingColumnsOfKey) {
  std::vector<LayerKvSpec> specs = {{1, 10, 6, true}};
  auto cache = KvCache::Create(specs, 2, 4);
  ASSERT_TRUE(cache.ok()) << cache.status();
  Tensor k = cache->k_cache(0);
  Tensor v = cache->v_cache(0);
  EXPECT_EQ(v.shape(), (Shape{2, 4, 1, 6}));
  float* kp = k.data<float>();
  for (int64_t i = 0; i < k.numel(); ++i) kp[i] = static_cast<float>(i);
  // Element [1, 2, 0, 5] of v is k's element at the same row, column 5.
  const float* vp = v.data<float>();
  int64_t off = 1 * v.stride(0) + 2 * v.stride(1) + 5 * v.stride(3);
  EXPECT_EQ(vp[off], static_cast<float>((1 * 4 + 2) * 10 + 5));
  EXPECT_EQ(cache->nbytes(), 2 * 4 * 10 * 4);
}

TEST(KvCacheTest, RejectsAliasWiderThanKey) {
  std::vector<LayerKvSpec> specs = {{1, 4, 4, false}, {1, 4, 6, true}};
  auto cache = KvCache::Create(specs, 2, 4);
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.status().message().find("layer 1"), std::string::npos) << cache.status();
}

TEST(KvCacheTest, RejectsNonF32) {
  std::vector<LayerKvSpec> specs = {{1, 4, 4, false}};
  EXPECT_FALSE(KvCache::Create(specs, 2, 4, DType::kBF16).ok());
}

TEST(KvCacheTest, RejectsZeroBlocks) {
  std::vector<LayerKvSpec> specs = {{1, 4, 4, false}};
  EXPECT_FALSE(KvCache::Create(specs, 0, 4).ok());
}

TEST(BlockAllocatorTest, AllocatesDistinctBlocksUntilExhausted) {
  BlockAllocator alloc(7);
  auto a = alloc.Allocate(3);
  ASSERT_TRUE(a.ok());
  auto b = alloc.Allocate(4);
  ASSERT_TRUE(b.ok());
  std::set<int32_t> all(a->begin(), a->end());
  all.insert(b->begin(), b->end());
  EXPECT_EQ(all.size(), 7u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 6);
  EXPECT_EQ(alloc.num_free(), 0);
  auto c = alloc.Allocate(1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(BlockAllocatorTest, FailedAllocationTakesNothing) {
  BlockAllocator alloc(3);
  ASSERT_TRUE(alloc.Allocate(2).ok());
  EXPECT_FALSE(alloc.Allocate(2).ok());
  EXPECT_EQ(alloc.num_free(), 1);
}

TEST(BlockAllocatorTest, FreedBlocksAreReused) {
  BlockAllocator alloc(2);
  auto a = alloc.Allocate(2);
  ASSERT_TRUE(a.ok());
  alloc.Free(absl::MakeConstSpan(*a).subspan(0, 1));
  EXPECT_EQ(alloc.num_free(), 1);
  auto b = alloc.Allocate(1);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)[0], (*a)[0]);
}

TEST(BlockAllocatorDeathTest, DoubleFreeAborts) {
  BlockAllocator alloc(2);
  auto a = alloc.Allocate(1);
  ASSERT_TRUE(a.ok());
  alloc.Free(*a);
  EXPECT_DEATH(alloc.Free(*a), "not allocated");
}

}  // namespace
}  // namespace tessera
