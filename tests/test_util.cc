#include "tests/test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>
#include <unistd.h>

#include "kernels/base/logging.h"

namespace tessera::testing {

std::string TestDataDir() {
  if (const char* env = std::getenv("TESSERA_TESTDATA")) return env;
  return TESSERA_TESTDATA_DIR;
}

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              ("tessera_test_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string TesseraBinary() {
  const char* env = std::getenv("TESSERA_BIN");
  return env ? env : "tessera";
}

Tensor RandomTensor(absl::Span<const int64_t> shape, uint64_t seed, float lo, float hi) {
  absl::StatusOr<Tensor> t = Tensor::Empty(shape, DType::kF32);
  CHECK(t.ok());
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t->data<float>();
  for (int64_t i = 0; i < t->numel(); ++i) p[i] = dist(rng);
  return *std::move(t);
}

double RelativeError(const Tensor& a, const Tensor& b) {
  CHECK(a.shape() == b.shape()) << a.DebugString() << " vs " << b.DebugString();
  absl::StatusOr<Tensor> af = a.To(DType::kF32);
  absl::StatusOr<Tensor> bf = b.To(DType::kF32);
  CHECK(af.ok() && bf.ok());
  const float* x = af->data<float>();
  const float* y = bf->data<float>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < af->numel(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return std::numeric_limits<double>::infinity();
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

}  // namespace tessera::testing
