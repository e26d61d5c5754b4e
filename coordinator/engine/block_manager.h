// KvBlockManager: the coordinator's view of one model instance's paged KV cache (docs/engine.md).
//
// The instance holds num_blocks blocks of block_size token slots (StepExecutor::capacity()).
// Blocks are reference counted: a sequence holds one reference on every block of its block table.
// With prefix caching, a FULL block whose KV has been computed is registered under the chained
// hash of its contents, hash(parent block's hash, the block's token ids); a later sequence whose
// context starts with the same tokens reuses those blocks (a hit) instead of recomputing them.
// Lookups verify the parent hash and the token ids, so a hash collision can never produce a
// wrong hit. Blocks whose reference count drops to zero go to the tail of an LRU queue, in
// reverse block-table order (a sequence's last blocks are evicted before its prefix); they stay
// registered (and can still be hit) until a fresh allocation takes them from the queue's head,
// which evicts their hash.
//
// Thread safety: not thread safe; the engine thread owns it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace tessera {

class KvBlockManager {
 public:
  static constexpr uint64_t kRootHash = 0x9e3779b97f4a7c15ull;  // parent hash of block 0

  KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching);
  KvBlockManager(const KvBlockManager&) = delete;
  KvBlockManager& operator=(const KvBlockManager&) = delete;

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  // Blocks nobody references (free or cached-but-unused: both can be allocated).
  int num_free_blocks() const { return num_free_; }
  // Fraction of blocks referenced by live sequences, in [0, 1].
  double usage() const;
  // Blocks currently registered in the prefix cache (referenced or not).
  int num_cached_blocks() const { return static_cast<int>(cache_.size()); }
  int ref_count(int32_t block) const { return blocks_[block].ref_count; }
  bool is_cached(int32_t block) const { return blocks_[block].cached; }

  // Chained hash of one full block of token ids.
  static uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens);

  // Blocks holding the longest cached prefix of `tokens`, at most `max_blocks` full blocks (the
  // caller passes (num_tokens - 1) / block_size so that at least one token is left to compute).
  // Takes no references. Empty when prefix caching is off.
  std::vector<int32_t> FindCachedPrefix(absl::Span<const int32_t> tokens, int max_blocks) const;

  // Whether Allocate(cached, num_new) would succeed.
  bool CanAllocate(absl::Span<const int32_t> cached, int num_new) const;
  // Takes a reference on each block of `cached` (a FindCachedPrefix result of this step) and
  // appends them, then `num_new` fresh blocks (evicting the least recently used cached-but-unused
  // blocks), to `table`. Returns false and changes nothing when there are not enough blocks.
  bool Allocate(absl::Span<const int32_t> cached, int num_new, std::vector<int32_t>* table);
  // Drops one reference on each block of `table`; unreferenced blocks join the LRU queue's tail
  // in reverse order.
  void Free(absl::Span<const int32_t> table);

  // Registers `block`, which holds the computed KV of the full block `tokens` following a block
  // with hash `parent_hash`, in the prefix cache. Returns the block's chained hash (the parent of
  // the next block) whether or not it was registered (an identical block may already be).
  uint64_t CacheBlock(int32_t block, uint64_t parent_hash, absl::Span<const int32_t> tokens);

  // Forgets everything: all blocks free and uncached (the instance lost its cache).
  void Reset();

 private:
  struct Block {
    int ref_count = 0;
    bool cached = false;
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;  // contents when cached (verifies hits)
    int32_t prev = -1, next = -1;  // LRU queue links (sentinel index num_blocks_)
    bool queued = false;
  };
  void PushBack(int32_t block);
  void Unlink(int32_t block);
  int32_t PopFront();
  void Evict(int32_t block);

  const int num_blocks_;
  const int block_size_;
  const bool prefix_caching_;
  std::vector<Block> blocks_;  // num_blocks_ + 1 (the last is the queue sentinel)
  int num_free_ = 0;
  absl::flat_hash_map<uint64_t, int32_t> cache_;  // chained hash -> block
};

}  // namespace tessera
