// CUDA device layer: allocation, copies and on-device conversion against the host conversions.
// Skips itself without a GPU (and in CPU-only builds).
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(InitBackends().ok());
  }
};

TEST_F(CudaBackendTest, HostDeviceRoundTripPreservesBytes) {
  Tensor host = testing::RandomTensor({37, 129}, 7);
  absl::StatusOr<Tensor> dev = host.ToDevice(Device::Cuda(0));
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_TRUE(dev->device().is_cuda());
  absl::StatusOr<Tensor> back = dev->ToDevice(Device::Cpu());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(testing::RelativeError(*back, host), 0.0);
}

TEST(CudaBackend, CpuOnlyBuildRefusesCudaAllocationClearly) {
  if (BuiltWithCuda()) GTEST_SKIP() << "CUDA build";
  absl::StatusOr<Tensor> t = Tensor::Empty({4}, DType::kF32, Device::Cuda(0));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("CUDA"), absl::string_view::npos);
}

}  // namespace
}  // namespace tessera
