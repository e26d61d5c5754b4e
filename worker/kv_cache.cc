#include "worker/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"

namespace tessera {

int64_t KvBytesPerToken(const LayerKvSpec& spec, DType dtype) {
  int64_t elems = static_cast<int64_t>(spec.num_kv_heads) * spec.k_dim;
  if (!spec.v_aliases_k) elems += static_cast<int64_t>(spec.num_kv_heads) * spec.v_dim;
  return elems * static_cast<int64_t>(DTypeSize(dtype));
}

absl::StatusOr<KvCache> KvCache::Create(absl::Span<const LayerKvSpec> specs, int num_blocks,
                                        int block_size, DType dtype) {
  if (dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: dtype ", DTypeName(dtype), " is not supported (f32 only)"));
  }
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("KvCache: num_blocks must be > 0, got ",
                                                   num_blocks));
  }
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("KvCache: block_size must be > 0, got ",
                                                   block_size));
  }
  KvCache cache;
  cache.num_blocks_ = num_blocks;
  cache.block_size_ = block_size;
  cache.dtype_ = dtype;
  for (size_t layer = 0; layer < specs.size(); ++layer) {
    const LayerKvSpec& s = specs[layer];
    if (s.num_kv_heads <= 0 || s.k_dim <= 0 || s.v_dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCache: layer ", layer, " has an invalid spec (num_kv_heads=", s.num_kv_heads,
          ", k_dim=", s.k_dim, ", v_dim=", s.v_dim, ")"));
    }
    if (s.v_aliases_k && s.v_dim > s.k_dim) {
      return absl::InvalidArgumentError(absl::StrCat("KvCache: layer ", layer,
                                                     " aliases v into k but v_dim ", s.v_dim,
                                                     " > k_dim ", s.k_dim));
    }
    ASSIGN_OR_RETURN(Tensor k, Tensor::Zeros({num_blocks, block_size, s.num_kv_heads, s.k_dim},
                                             dtype));
    Tensor v;
    if (!s.v_aliases_k) {
      ASSIGN_OR_RETURN(v, Tensor::Zeros({num_blocks, block_size, s.num_kv_heads, s.v_dim}, dtype));
    }
    cache.specs_.push_back(s);
    cache.k_.push_back(std::move(k));
    cache.v_.push_back(std::move(v));
  }
  return cache;
}

int64_t KvCache::nbytes() const {
  int64_t total = 0;
  for (size_t i = 0; i < k_.size(); ++i) {
    total += static_cast<int64_t>(k_[i].nbytes());
    if (v_[i].defined()) total += static_cast<int64_t>(v_[i].nbytes());
  }
  return total;
}

Tensor KvCache::k_cache(int layer) const {
  CHECK(layer >= 0 && layer < num_layers()) << "KvCache::k_cache: layer " << layer;
  return k_[layer];
}

Tensor KvCache::v_cache(int layer) const {
  CHECK(layer >= 0 && layer < num_layers()) << "KvCache::v_cache: layer " << layer;
  if (v_[layer].defined()) return v_[layer];
  const Tensor& k = k_[layer];
  const LayerKvSpec& s = specs_[layer];
  return k.AsStrided({num_blocks_, block_size_, s.num_kv_heads, s.v_dim}, k.strides());
}

BlockAllocator::BlockAllocator(int num_blocks)
    : num_blocks_(num_blocks), allocated_(static_cast<size_t>(std::max(num_blocks, 0)), false) {
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int count) {
  if (count < 0) return absl::InvalidArgumentError("BlockAllocator: negative block count");
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", count,
                                                     " blocks requested, ", num_free(), " of ",
                                                     num_blocks_, " free"));
  }
  std::vector<int32_t> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) {
    int32_t b = free_.back();
    free_.pop_back();
    allocated_[b] = true;
    out.push_back(b);
  }
  return out;
}

void BlockAllocator::Free(absl::Span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    CHECK(b >= 0 && b < num_blocks_) << "BlockAllocator::Free: invalid block " << b;
    CHECK(allocated_[b]) << "BlockAllocator::Free: block " << b << " is not allocated";
    allocated_[b] = false;
    free_.push_back(b);
  }
}

}  // namespace tessera
