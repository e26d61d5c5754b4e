// AttentionBatch: the per-step metadata every attention layer of a model reads.
//
// Built once per forward pass by the model runner from the scheduled sequences (prefill chunks
// and decode tokens, in any mix), shared by all layers. Tokens of sequence s occupy rows
// [query_start_loc[s], query_start_loc[s + 1]) of the activations. Read-only during the pass.
#pragma once

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

}  // namespace tessera
