// AVX2+FMA+F16C Linear kernels (GEMV and packed GEMM); see linear.h and linear_simd.h. Compiled
// with -mavx2 -mfma -mf16c and entered only after cpu::HasAvx2Fma() (linear.cc dispatches).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/base/logging.h"
#include "kernels/cpu/linear.h"

namespace tessera::cpu::avx2 {
namespace {

// MXFP4 decoding by byte shuffles. Every value an MXFP4 block can hold, ldexp(e2m1, e - 127) for
// all 256 exponents (including e = 255: 2^127 for code 0.5, inf for larger codes, like ldexp),
// has at most two significant bits, so its f32 bit pattern has zero low 16 bits: it is a bf16.
// Per exponent the table keeps the 16 codes' bf16 values as two 16-byte vpshufb tables (low
// bytes, high bytes), so one vpshufb pair decodes 32 codes exactly.
struct Mxfp4Bf16Table {
  struct Entry {
    alignas(16) uint8_t lo[16];
    alignas(16) uint8_t hi[16];
  };
  Entry e[256];
  Mxfp4Bf16Table() {
    for (int s = 0; s < 256; ++s) {
      for (int c = 0; c < 16; ++c) {
        const float v = std::ldexp(kE2M1Values[c], s - 127);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        CHECK((bits & 0xffffu) == 0) << "MXFP4 value not a bf16: code " << c << " exponent " << s;
        e[s].lo[c] = static_cast<uint8_t>(bits >> 16);
        e[s].hi[c] = static_cast<uint8_t>(bits >> 24);
      }
    }
  }
};
// Built on first use, i.e. only once the dispatcher chose AVX2 (a namespace-scope constructor
// compiled with -mavx2 would run at start-up on every CPU).
const Mxfp4Bf16Table& Mxfp4Table() {
  static const Mxfp4Bf16Table table;
  return table;
}

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
  // One 32-element MXFP4 block to f32 in element order (the GEMM's panel packing): the nibbles
  // interleaved in element order, then looked up in Mxfp4Table().
  static void DecodeMxfp4Block(const uint8_t* codes, uint8_t scale, float* out) {
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i nib = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(c, nib);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(c, 4), nib);
    const Mxfp4Bf16Table::Entry& e = Mxfp4Table().e[scale];
    const __m128i tlo = _mm_load_si128(reinterpret_cast<const __m128i*>(e.lo));
    const __m128i thi = _mm_load_si128(reinterpret_cast<const __m128i*>(e.hi));
    const __m128i idx[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
    for (int h = 0; h < 2; ++h) {
      const __m128i l = _mm_shuffle_epi8(tlo, idx[h]);
      const __m128i u = _mm_shuffle_epi8(thi, idx[h]);
      const __m128i w[2] = {_mm_unpacklo_epi8(l, u), _mm_unpackhi_epi8(l, u)};  // bf16 bits
      for (int q = 0; q < 2; ++q) {
        _mm256_storeu_ps(out + 16 * h + 8 * q, _mm256_castsi256_ps(_mm256_slli_epi32(
                                                   _mm256_cvtepu16_epi32(w[q]), 16)));
      }
    }
  }
};

// GEMV: MR * NR accumulators within the 16 ymm registers.
constexpr int GemvNr(int mr) { return mr <= 2 ? 4 : (mr <= 4 ? 2 : 1); }
// GEMM register block: 6 rows x 16 columns (2 ymm) = 12 accumulators.
constexpr int kGemmMr = 6;
constexpr int kGemmNr = 16;

#include "kernels/cpu/linear_simd.h"

// ---- MXFP4 GEMV ---------------------------------------------------------------------------------
//
// Per 32-element block of a weight row: the 16 code bytes broadcast to both 128-bit lanes, lane 0
// keeping the low nibbles (even elements), lane 1 the high nibbles (odd elements); two vpshufb
// look up the low and high bytes of the bf16 values in Mxfp4Table() (exact, e = 255 included), and
// byte / word unpacks with zero widen them to four f32 vectors holding, in order, elements
// {0,2,4,6,1,3,5,7}, {8,10,12,14,9,11,13,15}, {16..22 even, 17..23 odd}, {24..30 even, 25..31 odd}:
// x reordered in groups of 8 (a.xp, PermuteRowsForMxfp4 with half = 4) matches without any
// further shuffle. 8 shuffles and 3 integer ops per 32 weights, against 14 for decoding with
// vpermps on an 8-entry magnitude table plus a sign XOR.

// Decodes block b of weight row `codes` (exponent `scale`) into w[4] in the a.xp order.
inline void DecodeMxfp4Gemv(const Mxfp4Bf16Table& table, const uint8_t* codes, uint8_t scale,
                            __m256 (&w)[4]) {
  const __m256i c =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  const __m256i idx = _mm256_and_si256(_mm256_blend_epi32(c, _mm256_srli_epi16(c, 4), 0xf0),
                                       _mm256_set1_epi8(0x0f));
  const Mxfp4Bf16Table::Entry& e = table.e[scale];
  const __m256i l = _mm256_shuffle_epi8(
      _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(e.lo))), idx);
  const __m256i u = _mm256_shuffle_epi8(
      _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(e.hi))), idx);
  const __m256i w0 = _mm256_unpacklo_epi8(l, u), w1 = _mm256_unpackhi_epi8(l, u);
  const __m256i z = _mm256_setzero_si256();
  w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, w0));
  w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, w0));
  w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, w1));
  w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, w1));
}

// MR rows of x against NR weight rows per tile, NACC accumulators per (row of x, weight row)
// (more independent FMA chains where MR * NR is small). Each weight row's block is decoded once
// and multiplied into all MR rows of x (x from L1). Tiles picked by measurement (single thread,
// L2-resident, rows x GB/s of MXFP4 bytes, TESSERA_CPU_ISA=avx2 on a Zen 4 EPYC): m = 1: NR 4 /
// NACC 2 11.1 (NR 2 / NACC 2 10.9, NR 4 / NACC 1 10.3, NR 1 / NACC 4 9.7); m = 2: NR 4 15.4
// (NR 2 14.5); m = 3: NR 3 16.0 (NR 1 or 2 15.5); m = 4: NR 1 13.8 (NR 2 or 3 12.9-13.0).
// Linear sends at most 3 rows at a time (GemvRowChunks); m = 4..8 use NR 1.
template <int MR, int NR, int NACC>
void GemvMxfp4T(const LinearArgs& a, int64_t j0, int64_t j1) {
  const uint8_t* w = static_cast<const uint8_t*>(a.w);
  const int64_t row_codes = a.k / 2, blocks = a.k / kMxfp4BlockSize;
  const Mxfp4Bf16Table& table = Mxfp4Table();
  int64_t j = j0;
  auto tile = [&](auto nr_tag) {
    constexpr int R = decltype(nr_tag)::value;
    __m256 acc[MR][R][NACC];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
        for (int q = 0; q < NACC; ++q) acc[i][r][q] = _mm256_setzero_ps();
      }
    }
    for (int64_t b = 0; b < blocks; ++b) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m256 wv[4];
        DecodeMxfp4Gemv(table, w + (j + r) * row_codes + b * 16,
                        a.mx_scales[(j + r) * blocks + b], wv);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const float* xb = a.xp + i * a.ldxp + b * kMxfp4BlockSize;
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) {
            acc[i][r][q % NACC] =
                _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8 * q), wv[q], acc[i][r][q % NACC]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        __m256 s = acc[i][r][0];
#pragma GCC unroll 2
        for (int q = 1; q < NACC; ++q) s = _mm256_add_ps(s, acc[i][r][q]);
        a.out[i * a.ldo + j + r] = Vec::Sum(s) + (a.bias != nullptr ? a.bias[j + r] : 0.0f);
      }
    }
  };
  for (; j + NR <= j1; j += NR) tile(std::integral_constant<int, NR>());
  for (; j < j1; ++j) tile(std::integral_constant<int, 1>());
}

}  // namespace

void GemvMxfp4(const LinearArgs& a, int64_t j0, int64_t j1) {
  switch (a.m) {
    case 1: return GemvMxfp4T<1, 4, 2>(a, j0, j1);
    case 2: return GemvMxfp4T<2, 4, 1>(a, j0, j1);
    case 3: return GemvMxfp4T<3, 3, 1>(a, j0, j1);
    case 4: return GemvMxfp4T<4, 1, 1>(a, j0, j1);
    case 5: return GemvMxfp4T<5, 1, 1>(a, j0, j1);
    case 6: return GemvMxfp4T<6, 1, 1>(a, j0, j1);
    case 7: return GemvMxfp4T<7, 1, 1>(a, j0, j1);
    case 8: return GemvMxfp4T<8, 1, 1>(a, j0, j1);
    default: CHECK(false) << "avx2::GemvMxfp4 with m = " << a.m;
  }
}

void Gemv(const LinearArgs& a, int64_t j0, int64_t j1) {
  if (a.mx_scales != nullptr) {
    CHECK(a.xp != nullptr && a.xp_half == 4)
        << "AVX2 MXFP4 GEMV without x reordered for it (AttachMxfp4X)";
    return GemvMxfp4(a, j0, j1);
  }
  GemvImpl(a, j0, j1);
}
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  GemmImpl(a, i0, i1, j0, j1);
}

}  // namespace tessera::cpu::avx2
