// AttentionBatch: the per-step metadata every attention layer of a model reads.
//
// Built once per forward pass by the model runner from the scheduled sequences (prefill chunks
// and decode tokens, in any mix), shared by all layers. Tokens of sequence s occupy rows
// [query_start_loc[s], query_start_loc[s + 1]) of the activations. Read-only during the pass.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"

namespace tessera {

struct AttentionBatch {
  int num_seqs = 0;
  int num_tokens = 0;
  int block_size = 16;     // KV cache slots per block
  Tensor positions;        // [num_tokens] i32: absolute position of each token in its sequence
  Tensor slot_mapping;     // [num_tokens] i64: block * block_size + slot where its KV is written
  Tensor block_tables;     // [num_seqs, max_blocks_per_seq] i32
  Tensor seq_lens;         // [num_seqs] i32: context length including this step's tokens
  Tensor query_start_loc;  // [num_seqs + 1] i32
  // Rows of the last token of each sequence ([num_seqs] i32): the rows whose logits are needed.
  Tensor last_token_rows;
};

// One sequence's part of a step: context positions [start, start + count). The context is
// `head` followed by `tail` (a runner may keep prompt and outputs apart); `blocks` is its block
// table and must cover start + count tokens.
struct BatchSeq {
  absl::Span<const int32_t> head;
  absl::Span<const int32_t> tail;
  absl::Span<const int32_t> blocks;
  int64_t start = 0;
  int64_t count = 0;
};

// Builds the input ids ([num_tokens] i32) and the AttentionBatch of `seqs`, in order.
absl::Status BuildAttentionBatch(absl::Span<const BatchSeq> seqs, int block_size,
                                 Tensor& input_ids, AttentionBatch& batch);

}  // namespace tessera
