// AVX-512 Linear kernels (GEMV and packed GEMM); see linear.h and linear_simd.h. Compiled with
// -mavx512f/bw/vl/dq/bf16/vnni and entered only after cpu::HasAvx512() (linear.cc dispatches).
// GCC 12 reports spurious -W(maybe-)uninitialized warnings inside its own AVX-512 intrinsic headers
// (_mm512_undefined_* in _mm512_slli_epi32, _mm512_cvtph_ps) once these kernels are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/base/logging.h"
#include "kernels/cpu/linear.h"

namespace tessera::cpu::avx512 {
namespace {

struct Vec {
  using T = __m512;
  static constexpr int kWidth = 16;
  static T Zero() { return _mm512_setzero_ps(); }
  static T Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T Set1(float f) { return _mm512_set1_ps(f); }
  static T Fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T Mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T Add(T a, T b) { return _mm512_add_ps(a, b); }
  static float Sum(T v) { return _mm512_reduce_add_ps(v); }
  static T LoadBf16(const uint16_t* p) {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static T LoadF16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  // e4m3fn -> f32: the 7 magnitude bits shifted into an f32 exponent/mantissa and rescaled by
  // 2^(127 - 7) (exact for normals and subnormals), sign copied, S.1111.111 -> NaN.
  static T LoadF8E4M3(const uint8_t* p) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi32(0x7f));
    const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(b, _mm512_set1_epi32(0x80)), 24);
    const T v = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(mag, 20)),
                              _mm512_set1_ps(0x1p120f));
    const T s = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign));
    const __mmask16 nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f));
    return _mm512_mask_blend_ps(nan, s, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  }
};

// GEMV: NR weight rows per tile so that MR * NR accumulators fit the 32 zmm registers.
constexpr int GemvNr(int mr) { return mr <= 4 ? 4 : 2; }
// GEMM register block: kGemmMr rows x kGemmNr columns (2 zmm) of accumulators.
constexpr int kGemmMr = 8;
constexpr int kGemmNr = 32;

#include "kernels/cpu/linear_simd.h"

}  // namespace

void Gemv(const LinearArgs& a, int64_t j0, int64_t j1) { GemvImpl(a, j0, j1); }
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  GemmImpl(a, i0, i1, j0, j1);
}

}  // namespace tessera::cpu::avx512
