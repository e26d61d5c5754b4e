// Element types and scalar conversions.
//
// DType names every element type Tessera stores: activations are f32 on CPU; weights arrive as
// f32, bf16, f16 or fp8 (e4m3fn with block scales as in DeepSeek-V3, or e5m2); token ids and
// indices are i32/i64. Conversions follow PyTorch's semantics exactly: round to nearest even;
// float -> e4m3fn turns values beyond its range into NaN (e4m3fn has no infinity), float -> e5m2
// into infinity. All functions are pure and thread safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace tessera {

enum class DType : uint8_t {
  kF32 = 0,
  kF16,
  kBF16,
  kF8E4M3,  // float8_e4m3fn: bias 7, max 448, no infinities, NaN = S.1111.111
  kF8E5M2,  // float8_e5m2: bias 15, IEEE-like with infinities
  kI8,
  kU8,
  kBool,
  kI32,
  kI64,
};

// Bytes per element.
size_t DTypeSize(DType dtype);
// Lower-case name used in logs and tessera's own output: "f32", "bf16", "f8_e4m3", ...
absl::string_view DTypeName(DType dtype);
bool IsFloatingPoint(DType dtype);
// Parses DTypeName() spellings and the common aliases "float32", "bfloat16", "fp8", ...
absl::StatusOr<DType> ParseDType(absl::string_view name);
// The dtype strings of the safetensors header ("F32", "BF16", "F8_E4M3", ...).
absl::StatusOr<DType> DTypeFromSafetensors(absl::string_view name);
absl::string_view DTypeToSafetensors(DType dtype);

// ---- Scalar conversions ------------------------------------------------------------------------

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float Bf16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }
inline uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

float F8E4M3ToFloat(uint8_t v);
uint8_t FloatToF8E4M3(float f);
float F8E5M2ToFloat(uint8_t v);
uint8_t FloatToF8E5M2(float f);

// Lookup tables for the 8-bit formats (256 entries), for kernels.
const float* F8E4M3Table();
const float* F8E5M2Table();

// Converts `count` elements from `src` (of dtype `from`) to `dst` (of dtype `to`). Every pair of
// types is supported; float -> integer truncates toward zero like a C++ cast.
void ConvertBuffer(const void* src, DType from, void* dst, DType to, size_t count);

}  // namespace tessera
