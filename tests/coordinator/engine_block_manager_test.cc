// KvBlockManager: chained hashes, prefix lookups, reference counts, LRU eviction order.
#include "coordinator/engine/block_manager.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<int32_t> Range(int32_t begin, int32_t end) {
  std::vector<int32_t> v;
  for (int32_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// Allocates a table for `tokens` (with hits) and registers all its full blocks, as after a step.
std::vector<int32_t> AllocateAndCache(KvBlockManager& m, const std::vector<int32_t>& tokens) {
  const int bs = m.block_size();
  std::vector<int32_t> hits = m.FindCachedPrefix(tokens, static_cast<int>(tokens.size()) / bs);
  int total = static_cast<int>((tokens.size() + bs - 1) / bs);
  std::vector<int32_t> table;
  EXPECT_TRUE(m.Allocate(hits, total - static_cast<int>(hits.size()), &table));
  uint64_t parent = KvBlockManager::kRootHash;
  for (size_t b = 0; b < tokens.size() / bs; ++b) {
    parent = m.CacheBlock(table[b], parent,
                          absl::MakeConstSpan(tokens).subspan(b * bs, bs));
  }
  return table;
}

TEST(KvBlockManager, HashDependsOnParentAndTokens) {
  std::vector<int32_t> a = {1, 2, 3, 4};
  std::vector<int32_t> b = {1, 2, 3, 5};
  uint64_t h = KvBlockManager::HashBlock(KvBlockManager::kRootHash, a);
  EXPECT_EQ(h, KvBlockManager::HashBlock(KvBlockManager::kRootHash, a));
  EXPECT_NE(h, KvBlockManager::HashBlock(KvBlockManager::kRootHash, b));
  EXPECT_NE(h, KvBlockManager::HashBlock(h, a));
}

TEST(KvBlockManager, FindsLongestCachedPrefixOfFullBlocks) {
  KvBlockManager m(16, 4, true);
  std::vector<int32_t> t = Range(0, 10);  // 2 full blocks + 2 tokens
  std::vector<int32_t> table = AllocateAndCache(m, t);
  EXPECT_EQ(m.num_cached_blocks(), 2);
  EXPECT_THAT(m.FindCachedPrefix(Range(0, 12), 3), ElementsAre(table[0], table[1]));
  EXPECT_THAT(m.FindCachedPrefix(Range(0, 12), 1), ElementsAre(table[0]));
  std::vector<int32_t> diverged = Range(0, 12);
  diverged[5] = 99;  // second block differs
  EXPECT_THAT(m.FindCachedPrefix(diverged, 3), ElementsAre(table[0]));
  std::vector<int32_t> first_differs = Range(0, 12);
  first_differs[0] = 7;
  EXPECT_THAT(m.FindCachedPrefix(first_differs, 3), IsEmpty());
}

TEST(KvBlockManager, SameBlockContentAtAnotherPositionIsNotAHit) {
  KvBlockManager m(16, 4, true);
  AllocateAndCache(m, {1, 2, 3, 4, 5, 6, 7, 8});
  // Block [5..8] exists, but only after [1..4]: a context starting with it must miss.
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{5, 6, 7, 8, 0}, 1), IsEmpty());
}

TEST(KvBlockManager, RefCountsOfSharedBlocks) {
  KvBlockManager m(8, 4, true);
  std::vector<int32_t> a = AllocateAndCache(m, Range(0, 9));  // 3 blocks
  EXPECT_EQ(m.num_free_blocks(), 5);
  std::vector<int32_t> b = AllocateAndCache(m, Range(0, 9));  // shares 2, 1 new
  EXPECT_EQ(b[0], a[0]);
  EXPECT_EQ(b[1], a[1]);
  EXPECT_NE(b[2], a[2]);
  EXPECT_EQ(m.ref_count(a[0]), 2);
  EXPECT_EQ(m.num_free_blocks(), 4);
  m.Free(a);
  EXPECT_EQ(m.ref_count(a[0]), 1);
  EXPECT_EQ(m.num_free_blocks(), 5);
  m.Free(b);
  EXPECT_EQ(m.num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(m.usage(), 0.0);
  EXPECT_EQ(m.num_cached_blocks(), 2);  // still cached while unused
}

TEST(KvBlockManager, HitOnAnUnusedCachedBlockTakesItBack) {
  KvBlockManager m(4, 4, true);
  std::vector<int32_t> a = AllocateAndCache(m, Range(0, 8));
  m.Free(a);
  std::vector<int32_t> hits = m.FindCachedPrefix(Range(0, 12), 2);
  ASSERT_EQ(hits.size(), 2u);
  // 4 free, 2 of which are the hits: 2 more fresh blocks fit, 3 do not.
  EXPECT_TRUE(m.CanAllocate(hits, 2));
  EXPECT_FALSE(m.CanAllocate(hits, 3));
  std::vector<int32_t> table;
  ASSERT_TRUE(m.Allocate(hits, 1, &table));
  EXPECT_EQ(m.num_free_blocks(), 1);
  EXPECT_EQ(m.ref_count(hits[0]), 1);
}

TEST(KvBlockManager, EvictsLeastRecentlyUsedAndTailBlocksFirst) {
  KvBlockManager m(4, 2, true);
  std::vector<int32_t> a = AllocateAndCache(m, {1, 2, 3, 4});  // 2 blocks
  std::vector<int32_t> b = AllocateAndCache(m, {5, 6, 7, 8});  // 2 blocks
  m.Free(a);  // a freed first: least recently used
  m.Free(b);
  std::vector<int32_t> table;
  ASSERT_TRUE(m.Allocate({}, 1, &table));
  // The first eviction is a's last block (tail first); a's first block is still a hit.
  EXPECT_EQ(table[0], a[1]);
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{1, 2, 3, 4, 0}, 2), ElementsAre(a[0]));
  ASSERT_TRUE(m.Allocate({}, 1, &table));
  EXPECT_EQ(table[1], a[0]);
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{1, 2, 3, 4, 0}, 2), IsEmpty());
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{5, 6, 7, 8, 0}, 2), ElementsAre(b[0], b[1]));
}

TEST(KvBlockManager, UncachedFreedBlocksAreReusedBeforeCachedOnes) {
  KvBlockManager m(3, 2, true);
  std::vector<int32_t> cached = AllocateAndCache(m, {1, 2});
  m.Free(cached);
  std::vector<int32_t> scratch;
  ASSERT_TRUE(m.Allocate({}, 2, &scratch));  // takes the two never-used blocks
  EXPECT_THAT(scratch, ::testing::Not(::testing::Contains(cached[0])));
  m.Free(scratch);
  std::vector<int32_t> again;
  ASSERT_TRUE(m.Allocate({}, 1, &again));
  EXPECT_NE(again[0], cached[0]);
  EXPECT_EQ(m.num_cached_blocks(), 1);
}

TEST(KvBlockManager, AllocationFailureChangesNothing) {
  KvBlockManager m(3, 4, true);
  std::vector<int32_t> table;
  EXPECT_FALSE(m.Allocate({}, 4, &table));
  EXPECT_THAT(table, IsEmpty());
  EXPECT_EQ(m.num_free_blocks(), 3);
}

TEST(KvBlockManager, DuplicateContentIsRegisteredOnce) {
  KvBlockManager m(8, 2, true);
  std::vector<int32_t> a;
  std::vector<int32_t> b;
  ASSERT_TRUE(m.Allocate({}, 1, &a));
  ASSERT_TRUE(m.Allocate({}, 1, &b));
  std::vector<int32_t> tokens = {3, 4};
  uint64_t ha = m.CacheBlock(a[0], KvBlockManager::kRootHash, tokens);
  uint64_t hb = m.CacheBlock(b[0], KvBlockManager::kRootHash, tokens);
  EXPECT_EQ(ha, hb);
  EXPECT_TRUE(m.is_cached(a[0]));
  EXPECT_FALSE(m.is_cached(b[0]));
  EXPECT_EQ(m.num_cached_blocks(), 1);
}

TEST(KvBlockManager, PrefixCachingOffNeverHits) {
  KvBlockManager m(8, 2, false);
  AllocateAndCache(m, {1, 2, 3, 4});
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{1, 2, 3, 4, 5}, 2), IsEmpty());
  EXPECT_EQ(m.num_cached_blocks(), 0);
}

TEST(KvBlockManager, ResetForgetsEverything) {
  KvBlockManager m(4, 2, true);
  AllocateAndCache(m, {1, 2, 3, 4});
  m.Reset();
  EXPECT_EQ(m.num_free_blocks(), 4);
  EXPECT_EQ(m.num_cached_blocks(), 0);
  EXPECT_THAT(m.FindCachedPrefix(std::vector<int32_t>{1, 2, 3, 4, 5}, 2), IsEmpty());
}

}  // namespace
}  // namespace tessera
