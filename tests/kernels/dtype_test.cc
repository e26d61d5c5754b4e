#include "kernels/base/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(DType, Bf16RoundTripsRepresentableValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 3.140625f, 1e-30f, -65504.0f}) {
    EXPECT_EQ(Bf16ToFloat(FloatToBf16(v)), Bf16ToFloat(FloatToBf16(Bf16ToFloat(FloatToBf16(v)))));
  }
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

TEST(DType, F16MatchesIeeeHalf) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(FloatToF16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x0001), 5.960464477539063e-08f);
  EXPECT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  for (int h = 0; h < 0x7c00; ++h) {
    ASSERT_EQ(FloatToF16(F16ToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(DType, F8E4M3MatchesTorchFloat8E4m3fn) {
  EXPECT_EQ(F8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0x7f)));
  EXPECT_EQ(F8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(FloatToF8E4M3(448.0f), 0x7e);
  EXPECT_EQ(FloatToF8E4M3(464.0f), 0x7e);    // tie rounds to even (448)
  EXPECT_EQ(FloatToF8E4M3(470.0f), 0x7f);    // out of range: NaN, as torch
  EXPECT_EQ(FloatToF8E4M3(-1.0f), 0xb8);
  for (int v = 0; v < 256; ++v) {
    if ((v & 0x7f) == 0x7f) continue;
    ASSERT_EQ(FloatToF8E4M3(F8E4M3ToFloat(static_cast<uint8_t>(v))), v) << v;
  }
}

TEST(DType, F8E5M2HasInfinities) {
  EXPECT_TRUE(std::isinf(F8E5M2ToFloat(0x7c)));
  EXPECT_EQ(F8E5M2ToFloat(0x7b), 57344.0f);
  EXPECT_EQ(FloatToF8E5M2(1e9f), 0x7c);
  for (int v = 0; v < 256; ++v) {
    const float f = F8E5M2ToFloat(static_cast<uint8_t>(v));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToF8E5M2(f), v) << v;
  }
}

TEST(DType, ParsesNamesAndSafetensorsSpellings) {
  EXPECT_EQ(*ParseDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(*DTypeFromSafetensors("F8_E4M3"), DType::kF8E4M3);
  EXPECT_FALSE(ParseDType("q4_k").ok());
  EXPECT_FALSE(DTypeFromSafetensors("F4").ok());
}

}  // namespace
}  // namespace tessera
