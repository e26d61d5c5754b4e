// Tests for kernels/cpu/cpu_features: detection consistency and the ISA override.
#include "kernels/cpu/cpu_features.h"

#include <optional>

#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

TEST(CpuFeatures, Avx512ImpliesAvx2) {
  if (HasAvx512()) {
    EXPECT_TRUE(HasAvx2Fma());
  }
  if (HasAvx512Bf16() || HasAvx512Vnni()) {
    EXPECT_TRUE(HasAvx512());
  }
}

TEST(CpuFeatures, OverrideCapsTheActiveIsa) {
  SetIsaOverride(Isa::kScalar);
  EXPECT_EQ(ActiveIsa(), Isa::kScalar);
  EXPECT_EQ(ActiveIsaName(), "scalar");
  EXPECT_FALSE(ActiveIsaHasBf16());
  SetIsaOverride(Isa::kAvx512);
  EXPECT_EQ(ActiveIsa(), BestSupportedIsa());  // clamped to what the CPU has
  SetIsaOverride(std::nullopt);
}

TEST(CpuFeatures, ParseIsa) {
  EXPECT_EQ(ParseIsa("AVX2").value(), Isa::kAvx2);
  EXPECT_EQ(ParseIsa("scalar").value(), Isa::kScalar);
  EXPECT_EQ(ParseIsa("avx512").value(), Isa::kAvx512);
  EXPECT_FALSE(ParseIsa("sse").ok());
}

}  // namespace
}  // namespace tessera::cpu
