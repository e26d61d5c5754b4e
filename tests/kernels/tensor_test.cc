#include "kernels/base/tensor.h"

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

TEST(Tensor, EmptyIsContiguousWithRowMajorStrides) {
  absl::StatusOr<Tensor> t = Tensor::Empty({3, 5, 7}, DType::kBF16);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->is_contiguous());
  EXPECT_EQ(t->strides(), (Shape{35, 7, 1}));
  EXPECT_EQ(t->nbytes(), 3u * 5 * 7 * 2);
}

TEST(Tensor, SliceAndSelectAreViewsOfTheSameMemory) {
  Tensor t = Tensor::FromVector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor col = t.Slice(1, 1, 3);
  EXPECT_FALSE(col.is_contiguous());
  EXPECT_EQ(col.shape(), (Shape{2, 2}));
  Tensor row1 = t.Select(0, 1);
  EXPECT_EQ(row1.data<float>()[0], 3.0f);
  row1.data<float>()[2] = 42.0f;
  EXPECT_EQ(t.data<float>()[5], 42.0f);
  absl::StatusOr<Tensor> packed = col.Clone();
  ASSERT_TRUE(packed.ok());
  EXPECT_EQ(std::vector<float>(packed->data<float>(), packed->data<float>() + 4),
            (std::vector<float>{1, 2, 4, 42}));
}

TEST(Tensor, ReshapeInfersOneDimensionAndRejectsBadCounts) {
  Tensor t = testing::RandomTensor({4, 6}, 1);
  absl::StatusOr<Tensor> r = t.Reshape({-1, 3});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->shape(), (Shape{8, 3}));
  EXPECT_FALSE(t.Reshape({5, 5}).ok());
  EXPECT_FALSE(t.Slice(1, 0, 3).Reshape({12}).ok());  // non-contiguous
}

TEST(Tensor, ToConvertsDtypesElementwise) {
  Tensor t = Tensor::FromVector(std::vector<float>{1.0f, -2.5f, 448.0f}, {3});
  absl::StatusOr<Tensor> fp8 = t.To(DType::kF8E4M3);
  ASSERT_TRUE(fp8.ok());
  absl::StatusOr<Tensor> back = fp8->To(DType::kF32);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(testing::RelativeError(*back, t), 0.0);
}

TEST(Tensor, FromBufferRejectsViewsBeyondTheBuffer) {
  absl::StatusOr<std::shared_ptr<Buffer>> buf = AllocateBuffer(Device::Cpu(), 64);
  ASSERT_TRUE(buf.ok());
  EXPECT_TRUE(Tensor::FromBuffer(*buf, 0, {16}, DType::kF32).ok());
  EXPECT_FALSE(Tensor::FromBuffer(*buf, 4, {16}, DType::kF32).ok());
  EXPECT_FALSE(Tensor::FromBuffer(*buf, 128, {1}, DType::kF32).ok());
}

TEST(Tensor, AsStridedBuildsInterleavedViews) {
  // A [2 tokens, 5] latent buffer viewed as its first 3 columns.
  Tensor t = testing::RandomTensor({2, 5}, 3);
  Tensor v = t.AsStrided({2, 3}, {5, 1});
  EXPECT_EQ(v.data<float>()[0], t.data<float>()[0]);
  absl::StatusOr<Tensor> packed = v.Clone();
  ASSERT_TRUE(packed.ok());
  EXPECT_EQ(packed->data<float>()[3], t.data<float>()[5]);
}

}  // namespace
}  // namespace tessera
