// KvCache: the paged key/value cache of one model replica on one worker, and its block allocator.
//
// Every decoder layer owns a cache of `num_blocks` blocks of `block_size` token slots, shaped by
// the layer's LayerKvSpec (from Model::KvSpecs()). A layer's k_cache(layer) / v_cache(layer)
// are views in the layout WriteKvCache / PagedAttention expect (kernels/ops.h):
//   k_cache: [num_blocks, block_size, num_kv_heads, k_dim], v_cache: [..., num_kv_heads, v_dim].
// A layer with v_aliases_k (the MLA latent cache: one vector [kv_lora_rank + qk_rope_head_dim]
// per token whose first v_dim columns are "v") stores ONE buffer; v_cache() is a strided view of
// the leading v_dim columns of every k row, so writing k also writes v.
//
// Block ids are shared by all layers: block b of a sequence holds the same token slots in every
// layer. BlockAllocator hands out block ids from a free list; the model runner (or the
// coordinator's block manager) builds block tables from them.
//
// Thread safety: KvCache is not synchronised; one forward pass at a time writes it (tokens of
// different sequences write disjoint slots). BlockAllocator is not synchronised either.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/dtype.h"
#include "kernels/base/tensor.h"

namespace tessera {

// The KV cache geometry of one decoder layer.
struct LayerKvSpec {
  int num_kv_heads = 0;     // heads stored per token (1 for MLA's latent vector)
  int k_dim = 0;            // elements of each stored k head
  int v_dim = 0;            // elements of each stored v head
  bool v_aliases_k = false; // true: v is the first v_dim columns of k (no separate v buffer);
                            // requires v_dim <= k_dim
};

// Bytes one token occupies in one layer's cache with element type `dtype`.
int64_t KvBytesPerToken(const LayerKvSpec& spec, DType dtype = DType::kF32);

class KvCache {
 public:
  KvCache() = default;
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Allocates zero-filled caches for every layer. Only f32 for now (INVALID_ARGUMENT otherwise).
  // Errors name the layer whose spec is invalid (non-positive sizes, v_dim > k_dim when aliased).
  static absl::StatusOr<KvCache> Create(absl::Span<const LayerKvSpec> specs, int num_blocks,
                                        int block_size, DType dtype = DType::kF32);

  int num_layers() const { return static_cast<int>(specs_.size()); }
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  DType dtype() const { return dtype_; }
  const LayerKvSpec& spec(int layer) const { return specs_[layer]; }
  // Total bytes of every layer's buffers.
  int64_t nbytes() const;

  // k_cache: [num_blocks, block_size, num_kv_heads, k_dim] (contiguous).
  Tensor k_cache(int layer) const;
  // v_cache: [num_blocks, block_size, num_kv_heads, v_dim]; contiguous, or a strided view into
  // k_cache(layer) when the spec has v_aliases_k.
  Tensor v_cache(int layer) const;

 private:
  std::vector<LayerKvSpec> specs_;
  std::vector<Tensor> k_;
  std::vector<Tensor> v_;  // undefined for aliased layers
  int num_blocks_ = 0;
  int block_size_ = 0;
  DType dtype_ = DType::kF32;
};

// A free list of block ids [0, num_blocks). Allocation order is deterministic (lowest id first
// after construction; freed blocks are reused most-recently-freed first).
class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks = 0);

  int num_blocks() const { return num_blocks_; }
  int num_free() const { return static_cast<int>(free_.size()); }

  // `count` blocks, or RESOURCE_EXHAUSTED (nothing allocated) when fewer are free.
  absl::StatusOr<std::vector<int32_t>> Allocate(int count);
  // Returns blocks to the free list. CHECKs that each id is valid and currently allocated.
  void Free(absl::Span<const int32_t> blocks);

 private:
  int num_blocks_ = 0;
  std::vector<int32_t> free_;     // stack: back() is handed out next
  std::vector<bool> allocated_;
};

}  // namespace tessera
