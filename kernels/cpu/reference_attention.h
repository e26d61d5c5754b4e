// Plain references for tessera::WriteKvCache and tessera::PagedAttention, used by tests and
// benchmarks to check the optimised kernels.
//
// PagedAttention materialises each sequence's keys and values from the block table (through the
// caches' strides), computes the full causal softmax per query row in double (sliding window and
// sinks as ops.h documents), and writes the result. Same contract, shapes and validation as the
// ops.h functions (kernels/cpu/attention.h ValidatePagedAttentionArgs / ValidateWriteKvCacheArgs);
// CPU tensors only. Single-threaded and slow on purpose. Thread safety: stateless.
#pragma once

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::ref {

// k: [num_tokens, num_kv_heads, head_dim_k], v: [num_tokens, num_kv_heads, head_dim_v] f32;
// slot_mapping: [num_tokens] i64 (negative = skip); caches
// [num_blocks, block_size, num_kv_heads, head_dim_{k,v}] f32, strided views allowed.
absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache);

// q: [num_tokens, num_heads, head_dim_k]; out: [num_tokens, num_heads, head_dim_v]; the rest as
// tessera::PagedAttention.
absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out);

}  // namespace tessera::ref
