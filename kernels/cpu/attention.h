// CPU implementations of the paged-attention operations of kernels/ops.h (WriteKvCache,
// PagedAttention), and the operand validation they share with the plain references in
// kernels/cpu/reference_attention.h.
//
// Contract: exactly the ops.h contract. Every tensor must be on the host. All tensors are read
// through their strides (q may be a view into a fused qkv buffer; k_cache / v_cache may be strided
// views of one shared buffer, as the DeepSeek MLA latent cache is: k_cache =
// [num_blocks, block_size, 1, kv_lora_rank + rope_dim], v_cache = its first kv_lora_rank
// columns). Every index (block table entries, slot mapping, seq_lens, query_start_loc) is checked
// before any memory is touched, with INVALID_ARGUMENT / OUT_OF_RANGE naming the tensor and entry.
//
// PagedAttention is an online-softmax (flash-attention style) f32 kernel over tiles of 32 keys.
// Work items are (sequence, range of kv heads, chunk of query tokens, chunk of each kv head's
// query heads); by default an item covers every kv head, so each cache block is read as one
// contiguous run, and the ranges shrink (kv heads first) until there are about four items per
// thread of ThreadPool::Default(). Query heads sharing a kv head (GQA/MQA) read each key/value row
// once per item. The dot products and value accumulation use AVX-512 or AVX2+FMA when
// cpu::ActiveIsa() allows, portable loops otherwise; the next key tile is prefetched.
//
// Thread safety: stateless; calls on disjoint outputs may run concurrently.
#pragma once

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cpu {

// Checks the operands of WriteKvCache: dtypes, ranks, matching dimensions, and every
// slot_mapping entry < num_blocks * block_size. Does not check the device.
absl::Status ValidateWriteKvCacheArgs(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                                      const Tensor& k_cache, const Tensor& v_cache);

// Checks the operands of PagedAttention: dtypes, ranks, shapes, query_start_loc monotone and
// within q, 0 <= q_len <= seq_len <= max_blocks_per_seq * block_size, every block-table entry a
// sequence uses in [0, num_blocks), sinks shape, sliding_window >= 0, finite scale.
absl::Status ValidatePagedAttentionArgs(const Tensor& q, const Tensor& k_cache,
                                        const Tensor& v_cache, const Tensor& block_tables,
                                        const Tensor& seq_lens, const Tensor& query_start_loc,
                                        const AttentionParams& params, const Tensor& out);

// k: [num_tokens, num_kv_heads, head_dim_k], v: [num_tokens, num_kv_heads, head_dim_v] f32;
// slot_mapping: [num_tokens] i64; k_cache: [num_blocks, block_size, num_kv_heads, head_dim_k],
// v_cache: [num_blocks, block_size, num_kv_heads, head_dim_v] f32 (strided views allowed).
// Keys are written before values, so where the two caches alias (MLA) the values land last.
absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache);

// See tessera::PagedAttention in kernels/ops.h. Rows of `out` outside
// [query_start_loc[0], query_start_loc[num_seqs]) are left unchanged.
absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out);

}  // namespace tessera::cpu
