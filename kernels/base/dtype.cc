#include "kernels/base/dtype.h"

#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tessera {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kF8E5M2: return 1;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
    case DType::kBool: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kF8E4M3: return "f8_e4m3";
    case DType::kF8E5M2: return "f8_e5m2";
    case DType::kI8: return "i8";
    case DType::kU8: return "u8";
    case DType::kBool: return "bool";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
  }
  return "unknown";
}

bool IsFloatingPoint(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3:
    case DType::kF8E5M2: return true;
    default: return false;
  }
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "f32" || n == "float32" || n == "float" || n == "fp32") return DType::kF32;
  if (n == "f16" || n == "float16" || n == "half" || n == "fp16") return DType::kF16;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "f8_e4m3" || n == "fp8" || n == "float8_e4m3fn" || n == "e4m3" || n == "fp8_e4m3")
    return DType::kF8E4M3;
  if (n == "f8_e5m2" || n == "float8_e5m2" || n == "e5m2" || n == "fp8_e5m2") return DType::kF8E5M2;
  if (n == "i8" || n == "int8") return DType::kI8;
  if (n == "u8" || n == "uint8") return DType::kU8;
  if (n == "bool") return DType::kBool;
  if (n == "i32" || n == "int32") return DType::kI32;
  if (n == "i64" || n == "int64") return DType::kI64;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype '", name, "' (expected one of f32, f16, bf16, fp8/f8_e4m3, f8_e5m2, i8, u8, "
      "bool, i32, i64)"));
}

absl::StatusOr<DType> DTypeFromSafetensors(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "F8_E5M2") return DType::kF8E5M2;
  if (name == "I8") return DType::kI8;
  if (name == "U8") return DType::kU8;
  if (name == "BOOL") return DType::kBool;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return absl::InvalidArgumentError(absl::StrCat("unsupported safetensors dtype '", name,
                                                 "' (supported: F32, F16, BF16, F8_E4M3, "
                                                 "F8_E5M2, I8, U8, BOOL, I32, I64)"));
}

absl::string_view DTypeToSafetensors(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

// ---- f16 ---------------------------------------------------------------------------------------

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);
    // Subnormal: value = mant * 2^-24.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToF16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in f16: value / 2^-24 rounded to nearest even.
    const float a = BitsToFloat(abs);
    const float scaled = a * 16777216.0f;  // exact: multiply by 2^24
    const float r = std::nearbyint(scaled);  // default rounding mode is nearest-even
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: re-bias the exponent and round the mantissa to 10 bits, nearest even.
  uint32_t v = abs - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return sign | static_cast<uint16_t>(v >> 13);
}

// ---- fp8 ---------------------------------------------------------------------------------------

namespace {

// Generic decoder for 8-bit floats with `exp_bits` exponent bits.
float DecodeFp8(uint8_t v, int exp_bits, int bias, bool has_inf) {
  const int man_bits = 7 - exp_bits;
  const bool neg = v & 0x80;
  const int exp = (v >> man_bits) & ((1 << exp_bits) - 1);
  const int man = v & ((1 << man_bits) - 1);
  float out;
  if (has_inf && exp == (1 << exp_bits) - 1) {
    out = man == 0 ? std::numeric_limits<float>::infinity()
                   : std::numeric_limits<float>::quiet_NaN();
  } else if (!has_inf && exp == (1 << exp_bits) - 1 && man == (1 << man_bits) - 1) {
    out = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    out = std::ldexp(static_cast<float>(man), 1 - bias - man_bits);
  } else {
    out = std::ldexp(1.0f + static_cast<float>(man) / (1 << man_bits), exp - bias);
  }
  return neg ? -out : out;
}

// Round-to-nearest-even encoder matching c10's fp8 conversions.
uint8_t EncodeFp8(float f, int exp_bits, int bias, bool has_inf) {
  const int man_bits = 7 - exp_bits;
  const uint8_t sign = (FloatBits(f) >> 24) & 0x80;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7f);
  const float a = std::fabs(f);
  // Largest finite value.
  const int max_exp = has_inf ? (1 << exp_bits) - 2 : (1 << exp_bits) - 1;
  const int max_man = has_inf ? (1 << man_bits) - 1 : (1 << man_bits) - 2;
  const float max_val = std::ldexp(1.0f + static_cast<float>(max_man) / (1 << man_bits),
                                   max_exp - bias);
  // Halfway point above max_val: values at or beyond round out of range.
  const float overflow = std::ldexp(1.0f + (max_man + 0.5f) / (1 << man_bits), max_exp - bias);
  // A tie at `overflow` rounds to the even neighbour: max_val when its mantissa is even.
  const bool out_of_range = (max_man % 2 == 0) ? a > overflow : a >= overflow;
  if (std::isinf(a) || out_of_range) {
    if (has_inf) return sign | static_cast<uint8_t>(((1 << exp_bits) - 1) << man_bits);
    return sign | 0x7f;  // e4m3fn: out of range -> NaN (as torch)
  }
  if (a > max_val) return sign | static_cast<uint8_t>((max_exp << man_bits) | max_man);
  const int min_normal_exp = 1 - bias;
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exp = e - 1;    // a = 1.x * 2^exp
  if (a == 0.0f) return sign;
  if (exp < min_normal_exp) {
    // Subnormal: quantum 2^(min_normal_exp - man_bits).
    const float q = std::nearbyint(std::ldexp(a, man_bits - min_normal_exp));
    const int m = static_cast<int>(q);
    if (m >= (1 << man_bits)) return sign | static_cast<uint8_t>(1 << man_bits);  // smallest normal
    return sign | static_cast<uint8_t>(m);
  }
  float q = std::nearbyint(std::ldexp(a, man_bits - exp));  // in [2^man_bits, 2^(man_bits+1)]
  int m = static_cast<int>(q);
  if (m == (2 << man_bits)) {
    m = 1 << man_bits;
    ++exp;
  }
  const int biased = exp + bias;
  return sign | static_cast<uint8_t>((biased << man_bits) | (m - (1 << man_bits)));
}

struct Fp8Tables {
  float e4m3[256];
  float e5m2[256];
  Fp8Tables() {
    for (int i = 0; i < 256; ++i) {
      e4m3[i] = DecodeFp8(static_cast<uint8_t>(i), 4, 7, false);
      e5m2[i] = DecodeFp8(static_cast<uint8_t>(i), 5, 15, true);
    }
  }
};

const Fp8Tables& Tables() {
  static const Fp8Tables tables;
  return tables;
}

template <typename T>
float LoadAsFloat(const void* src, size_t i, DType from) {
  (void)sizeof(T);
  switch (from) {
    case DType::kF32: return static_cast<const float*>(src)[i];
    case DType::kF16: return F16ToFloat(static_cast<const uint16_t*>(src)[i]);
    case DType::kBF16: return Bf16ToFloat(static_cast<const uint16_t*>(src)[i]);
    case DType::kF8E4M3: return Tables().e4m3[static_cast<const uint8_t*>(src)[i]];
    case DType::kF8E5M2: return Tables().e5m2[static_cast<const uint8_t*>(src)[i]];
    case DType::kI8: return static_cast<const int8_t*>(src)[i];
    case DType::kU8: return static_cast<const uint8_t*>(src)[i];
    case DType::kBool: return static_cast<const uint8_t*>(src)[i] ? 1.0f : 0.0f;
    case DType::kI32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
    case DType::kI64: return static_cast<float>(static_cast<const int64_t*>(src)[i]);
  }
  return 0.0f;
}

int64_t LoadAsInt(const void* src, size_t i, DType from) {
  switch (from) {
    case DType::kI8: return static_cast<const int8_t*>(src)[i];
    case DType::kU8: return static_cast<const uint8_t*>(src)[i];
    case DType::kBool: return static_cast<const uint8_t*>(src)[i] ? 1 : 0;
    case DType::kI32: return static_cast<const int32_t*>(src)[i];
    case DType::kI64: return static_cast<const int64_t*>(src)[i];
    default: return static_cast<int64_t>(LoadAsFloat<float>(src, i, from));
  }
}

}  // namespace

float F8E4M3ToFloat(uint8_t v) { return Tables().e4m3[v]; }
uint8_t FloatToF8E4M3(float f) { return EncodeFp8(f, 4, 7, false); }
float F8E5M2ToFloat(uint8_t v) { return Tables().e5m2[v]; }
uint8_t FloatToF8E5M2(float f) { return EncodeFp8(f, 5, 15, true); }
const float* F8E4M3Table() { return Tables().e4m3; }
const float* F8E5M2Table() { return Tables().e5m2; }

void ConvertBuffer(const void* src, DType from, void* dst, DType to, size_t count) {
  if (count == 0) return;  // src/dst may be null for empty tensors
  if (from == to) {
    std::memcpy(dst, src, count * DTypeSize(from));
    return;
  }
  const bool int_path = !IsFloatingPoint(from) && !IsFloatingPoint(to);
  for (size_t i = 0; i < count; ++i) {
    if (int_path) {
      const int64_t v = LoadAsInt(src, i, from);
      switch (to) {
        case DType::kI8: static_cast<int8_t*>(dst)[i] = static_cast<int8_t>(v); break;
        case DType::kU8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(v); break;
        case DType::kBool: static_cast<uint8_t*>(dst)[i] = v != 0; break;
        case DType::kI32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
        case DType::kI64: static_cast<int64_t*>(dst)[i] = v; break;
        default: break;
      }
      continue;
    }
    const float v = LoadAsFloat<float>(src, i, from);
    switch (to) {
      case DType::kF32: static_cast<float*>(dst)[i] = v; break;
      case DType::kF16: static_cast<uint16_t*>(dst)[i] = FloatToF16(v); break;
      case DType::kBF16: static_cast<uint16_t*>(dst)[i] = FloatToBf16(v); break;
      case DType::kF8E4M3: static_cast<uint8_t*>(dst)[i] = FloatToF8E4M3(v); break;
      case DType::kF8E5M2: static_cast<uint8_t*>(dst)[i] = FloatToF8E5M2(v); break;
      case DType::kI8: static_cast<int8_t*>(dst)[i] = static_cast<int8_t>(v); break;
      case DType::kU8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(v); break;
      case DType::kBool: static_cast<uint8_t*>(dst)[i] = v != 0.0f; break;
      case DType::kI32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
      case DType::kI64: static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(v); break;
    }
  }
}

}  // namespace tessera
