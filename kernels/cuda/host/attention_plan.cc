#include "kernels/cuda/host/attention_plan.h"

#include <algorithm>

namespace tessera::cuda {

AttentionLaunchPlan PlanPagedAttention(int64_t num_tokens, int64_t num_heads, int64_t head_dim_v,
                                       int64_t max_context, int num_multiprocessors,
                                       int64_t min_keys_per_split, int max_splits) {
  AttentionLaunchPlan plan;
  const int64_t pairs = std::max<int64_t>(1, num_tokens * num_heads);
  const int64_t target_blocks = 4 * std::max(1, num_multiprocessors);
  if (pairs < target_blocks && max_context > min_keys_per_split) {
    const int64_t by_occupancy = (target_blocks + pairs - 1) / pairs;
    const int64_t by_length = max_context / std::max<int64_t>(1, min_keys_per_split);
    plan.num_splits = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>({by_occupancy, by_length, max_splits})));
  }
  if (plan.num_splits > 1) {
    plan.partial_floats = num_tokens * num_heads * plan.num_splits * (head_dim_v + 2);
  }
  return plan;
}

}  // namespace tessera::cuda
