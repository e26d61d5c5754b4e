// CUDA device layer: allocation, copies and on-device conversion against the host conversions.
// Skips itself without a GPU (and in CPU-only builds).
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "tests/test_util.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

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

#ifdef TESSERA_WITH_CUDA
absl::Status FailingCudaCall() {
  CUDA_RETURN_IF_ERROR(cudaErrorInvalidValue);
  return absl::OkStatus();
}
absl::Status FailingCublasCall() {
  CUBLAS_RETURN_IF_ERROR(CUBLAS_STATUS_NOT_SUPPORTED);
  return absl::OkStatus();
}

TEST(CudaErrors, CudaErrorBecomesStatusWithExpressionFileAndLine) {
  const absl::Status s = FailingCudaCall();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cudaErrorInvalidValue"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("cuda_backend_cuda_test.cc:"), absl::string_view::npos) << s;
}

TEST(CudaErrors, CublasErrorBecomesStatusWithFileAndLine) {
  const absl::Status s = FailingCublasCall();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("CUBLAS_STATUS_NOT_SUPPORTED"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("cuda_backend_cuda_test.cc:"), absl::string_view::npos) << s;
}

TEST_F(CudaBackendTest, AllocatorReusesFreedDeviceBlocks) {
  cuda::CachingAllocator& alloc = cuda::CachingAllocator::Get();
  const cuda::AllocatorStats before = alloc.Stats(0);
  void* first = nullptr;
  {
    absl::StatusOr<Tensor> t = Tensor::Empty({1000, 33}, DType::kF32, Device::Cuda(0));
    ASSERT_TRUE(t.ok()) << t.status();
    first = t->raw_data();
  }
  absl::StatusOr<Tensor> t = Tensor::Empty({1000, 33}, DType::kF32, Device::Cuda(0));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->raw_data(), first);
  const cuda::AllocatorStats after = alloc.Stats(0);
  EXPECT_EQ(after.num_allocs, before.num_allocs + 2);
  EXPECT_GE(after.num_cache_hits, before.num_cache_hits + 1);
  EXPECT_GE(after.allocated_bytes, before.allocated_bytes + 132000);
}

TEST_F(CudaBackendTest, LargeUploadThroughPinnedStagingPreservesBytes) {
  // 40 MiB: more than two 16 MiB staging chunks, so both buffers are reused.
  Tensor host = testing::RandomTensor({10 << 20}, 11);
  absl::StatusOr<Tensor> dev = host.ToDevice(Device::Cuda(0));
  ASSERT_TRUE(dev.ok()) << dev.status();
  absl::StatusOr<Tensor> back = dev->ToDevice(Device::Cpu());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(testing::RelativeError(*back, host), 0.0);
}

TEST_F(CudaBackendTest, ContextOfMissingDeviceIsInvalidArgument) {
  absl::StatusOr<cuda::DeviceContext*> c = cuda::DeviceContext::Get(cuda::DeviceCount() + 3);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}
#endif  // TESSERA_WITH_CUDA

}  // namespace
}  // namespace tessera
