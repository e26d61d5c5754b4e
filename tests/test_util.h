// Helpers shared by the tests: test-data paths, random tensors, relative error.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/base/tensor.h"

namespace tessera::testing {

// ../shared/testdata (TESSERA_TESTDATA overrides).
std::string TestDataDir();
// A fresh empty directory under the test temp dir.
std::string MakeTempDir(const std::string& name);
// The built tessera binary (TESSERA_BIN).
std::string TesseraBinary();

// Host f32 tensor with values uniform in [lo, hi), deterministic for `seed`.
Tensor RandomTensor(absl::Span<const int64_t> shape, uint64_t seed, float lo = -1.0f,
                    float hi = 1.0f);
// ||a - b|| / ||b|| over all elements (both converted to f32); NaN anywhere gives +inf.
double RelativeError(const Tensor& a, const Tensor& b);

}  // namespace tessera::testing
