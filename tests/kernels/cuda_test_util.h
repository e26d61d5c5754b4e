// Helpers of the CUDA kernel tests: a fixture that skips without a CUDA device, and copies of
// host tensors to cuda:0 and back. Every CUDA kernel test runs the kernel on cuda:0 and the CPU
// kernel (the reference) on the same inputs, and compares with testing::RelativeError.
#pragma once

#include <limits>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "tests/test_util.h"

namespace tessera::testing {

class CudaKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(InitBackends().ok());
  }
};

template <typename P>
class CudaKernelParamTest : public ::testing::TestWithParam<P> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(InitBackends().ok());
  }
};

// A contiguous copy of `t` on cuda:0 (undefined stays undefined). CHECK-fails on error.
inline Tensor ToCuda(const Tensor& t) {
  if (!t.defined()) return t;
  absl::StatusOr<Tensor> d = t.ToDevice(Device::Cuda(0));
  CHECK(d.ok()) << d.status();
  return *d;
}

// A contiguous host copy of a device tensor (waits for the device's queued work).
inline Tensor ToHost(const Tensor& t) {
  absl::StatusOr<Tensor> h = t.ToDevice(Device::Cpu());
  CHECK(h.ok()) << h.status();
  return *h;
}

// A device tensor of `shape` filled with NaN, so unwritten outputs fail the comparison.
inline Tensor PoisonedCuda(absl::Span<const int64_t> shape) {
  Tensor host = Tensor::Empty(shape, DType::kF32).value();
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
  return ToCuda(host);
}

}  // namespace tessera::testing
