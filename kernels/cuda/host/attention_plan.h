// Launch planning of the CUDA paged-attention kernel (kernels/cuda/attention.cu), kept free of
// CUDA so it is unit-tested on every machine.
//
// The kernel runs one thread block per (query token, query head, key split). Context lengths live
// on the device and are never read back, so the number of key splits is chosen from what the host
// knows: the capacity of the block table (max_blocks_per_seq * block_size, an upper bound of every
// context) and how many (token, head) blocks there are. Splitting pays off in decode, where few
// (token, head) pairs cannot fill the GPU; each split takes an equal share of its token's actual
// key range at run time and a second kernel merges the partial softmax states.
// Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace tessera::cuda {

struct AttentionLaunchPlan {
  int num_splits = 1;       // key splits per (token, head); 1 = no merge pass
  int threads = 128;        // threads per block (warps each take every num_warps-th key)
  int64_t partial_floats = 0;  // scratch for the merge: tokens * heads * splits * (head_dim_v + 2)
};

// min_keys_per_split: below this many keys per split, splitting costs more than it gains.
// target_blocks: blocks that keep the device busy (a few per multiprocessor).
AttentionLaunchPlan PlanPagedAttention(int64_t num_tokens, int64_t num_heads, int64_t head_dim_v,
                                       int64_t max_context, int num_multiprocessors,
                                       int64_t min_keys_per_split = 256, int max_splits = 32);

}  // namespace tessera::cuda
