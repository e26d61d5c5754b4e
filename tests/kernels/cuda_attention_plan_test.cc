// Launch planning of the CUDA paged-attention kernel (kernels/cuda/host/attention_plan.h); pure
// host logic, runs everywhere (label cpu).
#include "kernels/cuda/host/attention_plan.h"

#include "gtest/gtest.h"

namespace tessera::cuda {
namespace {

TEST(PlanPagedAttention, PrefillFillsTheDeviceWithoutSplits) {
  const AttentionLaunchPlan plan = PlanPagedAttention(2048, 32, 128, 4096, 132);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.partial_floats, 0);
}

TEST(PlanPagedAttention, LongContextDecodeSplitsKeys) {
  // Batch 1, 8 heads on 132 SMs: 8 blocks cannot fill the device; 32k keys allow many splits.
  const AttentionLaunchPlan plan = PlanPagedAttention(1, 8, 128, 32768, 132);
  EXPECT_EQ(plan.num_splits, 32);  // capped
  EXPECT_EQ(plan.partial_floats, 1 * 8 * 32 * (128 + 2));
}

TEST(PlanPagedAttention, ShortContextsAreNotSplit) {
  EXPECT_EQ(PlanPagedAttention(1, 8, 128, 200, 132).num_splits, 1);
}

TEST(PlanPagedAttention, SplitsAreBoundedByContextLength) {
  // 1000 keys / 256 per split = 3 splits at most.
  EXPECT_EQ(PlanPagedAttention(1, 4, 64, 1000, 132).num_splits, 3);
}

TEST(PlanPagedAttention, SplitsStopOnceTheDeviceIsBusy) {
  // 64 sequences x 8 heads = 512 blocks, just under 4 x 132 = 528: two splits suffice.
  EXPECT_EQ(PlanPagedAttention(64, 8, 128, 8192, 132).num_splits, 2);
  EXPECT_EQ(PlanPagedAttention(128, 8, 128, 8192, 132).num_splits, 1);
}

}  // namespace
}  // namespace tessera::cuda
