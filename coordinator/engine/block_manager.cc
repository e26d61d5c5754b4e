#include "coordinator/engine/block_manager.h"

#include <algorithm>

#include "kernels/base/logging.h"

namespace tessera {
namespace {

inline uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64-style mixing of each word into the running hash.
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

KvBlockManager::KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : num_blocks_(num_blocks), block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  CHECK_GT(num_blocks, 0);
  CHECK_GT(block_size, 0);
  Reset();
}

void KvBlockManager::Reset() {
  blocks_.assign(num_blocks_ + 1, Block{});
  Block& sentinel = blocks_[num_blocks_];
  sentinel.prev = sentinel.next = num_blocks_;
  cache_.clear();
  num_free_ = 0;
  for (int32_t b = 0; b < num_blocks_; ++b) PushBack(b);
}

double KvBlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free_) / num_blocks_;
}

uint64_t KvBlockManager::HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens) {
  uint64_t h = Mix(parent_hash, tokens.size());
  for (int32_t t : tokens) h = Mix(h, static_cast<uint32_t>(t));
  return h;
}

void KvBlockManager::PushBack(int32_t b) {
  Block& blk = blocks_[b];
  CHECK(!blk.queued);
  Block& sentinel = blocks_[num_blocks_];
  int32_t last = sentinel.prev;
  blk.prev = last;
  blk.next = num_blocks_;
  blocks_[last].next = b;
  sentinel.prev = b;
  blk.queued = true;
  ++num_free_;
}

void KvBlockManager::Unlink(int32_t b) {
  Block& blk = blocks_[b];
  CHECK(blk.queued);
  blocks_[blk.prev].next = blk.next;
  blocks_[blk.next].prev = blk.prev;
  blk.prev = blk.next = -1;
  blk.queued = false;
  --num_free_;
}

int32_t KvBlockManager::PopFront() {
  int32_t b = blocks_[num_blocks_].next;
  CHECK_NE(b, num_blocks_) << "no free KV block";
  Unlink(b);
  return b;
}

void KvBlockManager::Evict(int32_t b) {
  Block& blk = blocks_[b];
  if (!blk.cached) return;
  auto it = cache_.find(blk.hash);
  if (it != cache_.end() && it->second == b) cache_.erase(it);
  blk.cached = false;
  blk.tokens.clear();
  blk.tokens.shrink_to_fit();
}

std::vector<int32_t> KvBlockManager::FindCachedPrefix(absl::Span<const int32_t> tokens,
                                                      int max_blocks) const {
  std::vector<int32_t> hits;
  if (!prefix_caching_) return hits;
  int64_t full = static_cast<int64_t>(tokens.size()) / block_size_;
  int64_t n = std::min<int64_t>(full, max_blocks);
  uint64_t parent = kRootHash;
  for (int64_t i = 0; i < n; ++i) {
    absl::Span<const int32_t> block = tokens.subspan(i * block_size_, block_size_);
    uint64_t h = HashBlock(parent, block);
    auto it = cache_.find(h);
    if (it == cache_.end()) break;
    const Block& blk = blocks_[it->second];
    if (blk.parent_hash != parent || !std::equal(block.begin(), block.end(), blk.tokens.begin(),
                                                 blk.tokens.end())) {
      break;
    }
    hits.push_back(it->second);
    parent = h;
  }
  return hits;
}

bool KvBlockManager::CanAllocate(absl::Span<const int32_t> cached, int num_new) const {
  int reclaimed = 0;  // hit blocks that sit in the free queue (taking them removes them from it)
  for (int32_t b : cached) reclaimed += blocks_[b].ref_count == 0 ? 1 : 0;
  return num_new + reclaimed <= num_free_;
}

bool KvBlockManager::Allocate(absl::Span<const int32_t> cached, int num_new,
                              std::vector<int32_t>* table) {
  CHECK_GE(num_new, 0);
  if (!CanAllocate(cached, num_new)) return false;
  for (int32_t b : cached) {
    Block& blk = blocks_[b];
    CHECK(blk.cached) << "block " << b << " is not in the prefix cache";
    if (blk.ref_count == 0) Unlink(b);
    ++blk.ref_count;
    table->push_back(b);
  }
  for (int i = 0; i < num_new; ++i) {
    int32_t b = PopFront();
    Evict(b);
    blocks_[b].ref_count = 1;
    table->push_back(b);
  }
  return true;
}

void KvBlockManager::Free(absl::Span<const int32_t> table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& blk = blocks_[*it];
    CHECK_GT(blk.ref_count, 0) << "block " << *it << " freed twice";
    if (--blk.ref_count == 0) {
      if (!blk.cached) {
        // Uncached blocks carry nothing worth keeping: reuse them before any cached block.
        Block& sentinel = blocks_[num_blocks_];
        int32_t first = sentinel.next;
        blk.prev = num_blocks_;
        blk.next = first;
        blocks_[first].prev = *it;
        sentinel.next = *it;
        blk.queued = true;
        ++num_free_;
      } else {
        PushBack(*it);
      }
    }
  }
}

uint64_t KvBlockManager::CacheBlock(int32_t block, uint64_t parent_hash,
                                    absl::Span<const int32_t> tokens) {
  CHECK_EQ(static_cast<int>(tokens.size()), block_size_);
  uint64_t h = HashBlock(parent_hash, tokens);
  if (!prefix_caching_) return h;
  Block& blk = blocks_[block];
  CHECK_GT(blk.ref_count, 0) << "caching unreferenced block " << block;
  if (blk.cached) return h;  // a hit, or registered before
  if (cache_.contains(h)) return h;  // an identical block is already registered
  blk.cached = true;
  blk.hash = h;
  blk.parent_hash = parent_hash;
  blk.tokens.assign(tokens.begin(), tokens.end());
  cache_[h] = block;
  return h;
}

}  // namespace tessera
