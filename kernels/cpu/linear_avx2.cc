// AVX2+FMA+F16C Linear kernels (GEMV and packed GEMM); see linear.h and linear_simd.h. Compiled
// with -mavx2 -mfma -mf16c and entered only after cpu::HasAvx2Fma() (linear.cc dispatches).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/base/logging.h"
#include "kernels/cpu/linear.h"

namespace tessera::cpu::avx2 {
namespace {

struct Vec {
  using T = __m256;
  static constexpr int kWidth = 8;
  static T Zero() { return _mm256_setzero_ps(); }
  static T Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T Set1(float f) { return _mm256_set1_ps(f); }
  static T Fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T Mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T Add(T a, T b) { return _mm256_add_ps(a, b); }
  static float Sum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static T LoadBf16(const uint16_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static T LoadF16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // e4m3fn -> f32 as in the AVX-512 version.
  static T LoadF8E4M3(const uint8_t* p) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
    const T v = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(mag, 20)),
                              _mm256_set1_ps(0x1p120f));
    const T s = _mm256_castsi256_ps(_mm256_or_si256(_mm256_castps_si256(v), sign));
    const T nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
    return _mm256_blendv_ps(s, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), nan);
  }
  // One 32-element MXFP4 block to f32 (the GEMM's panel packing; scalar ldexp decode).
  static void DecodeMxfp4Block(const uint8_t* codes, uint8_t scale, float* out) {
    Mxfp4RowToF32(codes, &scale, 0, kMxfp4BlockSize, out);
  }
};

// GEMV: MR * NR accumulators within the 16 ymm registers.
constexpr int GemvNr(int mr) { return mr <= 2 ? 4 : (mr <= 4 ? 2 : 1); }
// GEMM register block: 6 rows x 16 columns (2 ymm) = 12 accumulators.
constexpr int kGemmMr = 6;
constexpr int kGemmNr = 16;

#include "kernels/cpu/linear_simd.h"

}  // namespace

void Gemv(const LinearArgs& a, int64_t j0, int64_t j1) { GemvImpl(a, j0, j1); }
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  GemmImpl(a, i0, i1, j0, j1);
}

}  // namespace tessera::cpu::avx2
