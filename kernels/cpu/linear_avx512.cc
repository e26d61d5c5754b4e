// AVX-512 Linear kernels (GEMV and packed GEMM); see linear.h and linear_simd.h. Compiled with
// -mavx512f/bw/vl/dq/bf16/vnni and entered only after cpu::HasAvx512() (linear.cc dispatches).
// GCC 12 reports spurious -W(maybe-)uninitialized warnings inside its own AVX-512 intrinsic headers
// (_mm512_undefined_* in _mm512_slli_epi32, _mm512_cvtph_ps) once these kernels are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/logging.h"
#include "kernels/cpu/linear.h"

namespace tessera::cpu::avx512 {
namespace {

// 2^(e - 127) for E8M0 exponents e < 255 (e = 0 is the f32 subnormal 2^-127).
struct Pow2Table {
  float v[256];
};
// Built at compile time: this file is compiled with AVX-512 flags, and a start-up constructor
// here could execute AVX-512 instructions on a CPU without them before any dispatch happens.
// 2^(e - 127) is the f32 with exponent field e (e >= 1) or the subnormal 2^-127 (e = 0); e = 255
// is never looked up (Mxfp4Table takes vscalefps for it).
constexpr Pow2Table MakePow2Table() {
  Pow2Table t{};
  t.v[0] = std::bit_cast<float>(uint32_t{0x00400000});
  for (uint32_t e = 1; e < 255; ++e) t.v[e] = std::bit_cast<float>(e << 23);
  return t;
}
constexpr Pow2Table kPow2Minus127 = MakePow2Table();
static_assert(kPow2Minus127.v[127] == 1.0f && kPow2Minus127.v[128] == 2.0f &&
              kPow2Minus127.v[126] == 0.5f);

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
  // e4m3fn -> f32: byte << 24 then arithmetic >> 4 puts the sign at bit 31 and the 7 magnitude
  // bits at 26..20 (the f32 exponent/mantissa position) with copies of the sign in 30..27, which
  // the mask clears; multiplying by 2^(127 - 7) rebiases the exponent (exact for normals and
  // subnormals, sign kept). S.1111.111 -> NaN.
  static T LoadF8E4M3(const uint8_t* p) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i t = _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(b, 24), 4),
                                       _mm512_set1_epi32(static_cast<int>(0x87f00000u)));
    const T v = _mm512_mul_ps(_mm512_castsi512_ps(t), _mm512_set1_ps(0x1p120f));
    const __mmask16 nan = _mm512_cmpeq_epi32_mask(
        _mm512_and_si512(t, _mm512_set1_epi32(0x07f00000)), _mm512_set1_epi32(0x07f00000));
    return _mm512_mask_blend_ps(nan, v, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  }
  // The e2m1 table times 2^(scale - 127): vscalefps is ldexp (zero stays zero, overflow is inf,
  // subnormal results are kept), so this equals transformers' dequantisation exactly.
  static T Mxfp4Table(uint8_t scale) {
    if (__builtin_expect(scale == 255, 0)) {
      return _mm512_scalef_ps(_mm512_loadu_ps(kE2M1Values), _mm512_set1_ps(128.0f));
    }
    return _mm512_mul_ps(_mm512_loadu_ps(kE2M1Values), _mm512_set1_ps(kPow2Minus127.v[scale]));
  }
  // Decodes one 32-element MXFP4 block (16 code bytes, element 2b in the low nibble of byte b)
  // to f32 in element order.
  static void DecodeMxfp4Block(const uint8_t* codes, uint8_t scale, float* out) {
    const T table = Mxfp4Table(scale);
    const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    const T lo = _mm512_permutexvar_ps(c, table);  // vpermps reads the low 4 bits
    const T hi = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), table);
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(lo, first, hi));
    _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(lo, second, hi));
  }
};

// GEMV: NR weight rows per tile so that MR * NR accumulators fit the 32 zmm registers.
constexpr int GemvNr(int mr) { return mr <= 4 ? 4 : 2; }
// GEMM register block: kGemmMr rows x kGemmNr columns (3 zmm) of accumulators.
constexpr int kGemmMr = 8;
constexpr int kGemmNr = 48;

#include "kernels/cpu/linear_simd.h"

// ---- bf16 GEMM with vdpbf16ps ------------------------------------------------------------------
//
// Activations rounded to bf16 (row pairs (x[2p], x[2p + 1]) as one 32-bit word), bf16 weights
// packed per panel as 32-bit pairs: packed[p * kBf16Nr + c] = (w[c][2p], w[c][2p + 1]).
// vdpbf16ps adds both products of a pair into an f32 lane, so each instruction does 32 MACs.

constexpr int64_t kBf16Kc = 512;  // k-block in elements (even)
constexpr int kBf16Nr = 32;       // register block: kGemmMr rows x 32 columns (2 zmm)

void PackPanelBf16Pairs(const LinearArgs& a, int64_t j, int nvalid, int64_t k0, int64_t kc,
                        uint32_t* packed) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w);
  const int64_t pairs = (kc + 1) / 2;
  for (int c = 0; c < kBf16Nr; ++c) {
    if (c >= nvalid) {
      for (int64_t p = 0; p < pairs; ++p) packed[p * kBf16Nr + c] = 0;
      continue;
    }
    const uint16_t* row = w + (j + c) * a.k + k0;
    const int64_t full = kc / 2;
    for (int64_t p = 0; p < full; ++p) {
      uint32_t v;
      std::memcpy(&v, row + 2 * p, 4);
      packed[p * kBf16Nr + c] = v;
    }
    if (full < pairs) packed[full * kBf16Nr + c] = row[2 * full];  // odd tail: (w, 0)
  }
}

template <int MR>
void MicroKernelBf16(const uint16_t* xb, int64_t ldxb, const uint32_t* packed, int64_t pairs,
                     float* out, int64_t ldo, int ncols, bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(packed + p * kBf16Nr);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(packed + p * kBf16Nr + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      uint32_t pair;
      std::memcpy(&pair, xb + i * ldxb + 2 * p, 4);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
  }
  const __mmask16 m0 = ncols >= 16 ? 0xffff : static_cast<__mmask16>((1u << ncols) - 1);
  const __mmask16 m1 = ncols >= 32 ? 0xffff
                       : ncols <= 16 ? 0
                                     : static_cast<__mmask16>((1u << (ncols - 16)) - 1);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* o = out + i * ldo;
    __m512 r0 = acc[i][0], r1 = acc[i][1];
    if (accumulate) {
      r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, o));
      r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, o + 16));
    }
    _mm512_mask_storeu_ps(o, m0, r0);
    _mm512_mask_storeu_ps(o + 16, m1, r1);
  }
}

using MicroKernelBf16Fn = void (*)(const uint16_t*, int64_t, const uint32_t*, int64_t, float*,
                                   int64_t, int, bool);

template <int... Is>
constexpr std::array<MicroKernelBf16Fn, sizeof...(Is)> MakeMicroKernelsBf16(
    std::integer_sequence<int, Is...>) {
  return {&MicroKernelBf16<Is + 1>...};
}

// GEMV on bf16 weights with vdpbf16ps: x already rounded to bf16 (a.xb, zero-padded rows), one
// weight row streamed at a time (as the f32 GEMV for m = 1), one instruction per 64-byte line
// per row of x instead of a conversion and two FMAs.
template <int MR>
void GemvBf16DotT(const LinearArgs& a, int64_t j0, int64_t j1) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w);
  const int64_t k = a.k;
  const int64_t kfull = k / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (k % 32)) - 1);
  for (int64_t j = j0; j < j1; ++j) {
    const uint16_t* wr = w + j * k;
    __m512 acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = _mm512_setzero_ps();
    int64_t c = 0;
    if constexpr (MR == 1) {
      // One row of x: a second accumulator for odd lines halves the vdpbf16ps latency chain.
      __m512 acc2 = _mm512_setzero_ps();
      for (; c + 64 <= kfull; c += 64) {
        acc[0] = _mm512_dpbf16_ps(acc[0], (__m512bh)_mm512_loadu_si512(a.xb + c),
                                  (__m512bh)_mm512_loadu_si512(wr + c));
        acc2 = _mm512_dpbf16_ps(acc2, (__m512bh)_mm512_loadu_si512(a.xb + c + 32),
                                (__m512bh)_mm512_loadu_si512(wr + c + 32));
      }
      acc[0] = _mm512_add_ps(acc[0], acc2);
    }
    for (; c < kfull; c += 32) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(wr + c);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_loadu_si512(a.xb + i * a.ldxb + c),
                                  wv);
      }
    }
    if (tail != 0) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, wr + kfull);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        acc[i] = _mm512_dpbf16_ps(
            acc[i], (__m512bh)_mm512_loadu_si512(a.xb + i * a.ldxb + kfull), wv);
      }
    }
    const float b = a.bias != nullptr ? a.bias[j] : 0.0f;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) a.out[i * a.ldo + j] = _mm512_reduce_add_ps(acc[i]) + b;
  }
}

// MR rows of x against NR weight rows at a time (NR > 1): each line of x is loaded once per NR
// weight lines instead of once per line. Pays off from m = 4 on, where the single-row stream
// spends most of its time on x loads (m = 4: 1.1-1.7x in A/B runs, docs/performance.md); for
// m <= 3 the single stream is faster. Rows left over at the end go through GemvBf16DotT.
template <int MR, int NR>
void GemvBf16DotTile(const LinearArgs& a, int64_t j0, int64_t j1) {
  const uint16_t* w = static_cast<const uint16_t*>(a.w);
  const int64_t k = a.k;
  const int64_t kfull = k / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (k % 32)) - 1);
  int64_t j = j0;
  for (; j + NR <= j1; j += NR) {
    __m512 acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
    }
    auto step = [&](int64_t c, const __m512bh (&wv)[NR]) {
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(a.xb + i * a.ldxb + c);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv, wv[r]);
      }
    };
    for (int64_t c = 0; c < kfull; c += 32) {
      __m512bh wv[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + (j + r) * k + c);
      step(c, wv);
    }
    if (tail != 0) {
      __m512bh wv[NR];
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) {
        wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(tail, w + (j + r) * k + kfull);
      }
      step(kfull, wv);  // x rows are zero-padded to a multiple of 32
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) {
        a.out[i * a.ldo + j + r] =
            _mm512_reduce_add_ps(acc[i][r]) + (a.bias != nullptr ? a.bias[j + r] : 0.0f);
      }
    }
  }
  if (j < j1) GemvBf16DotT<MR>(a, j, j1);
}

// ---- MXFP4 GEMV ---------------------------------------------------------------------------------
//
// Per 32-element block of a weight row: the 16 code bytes widened to 32-bit lanes, the low and
// high nibbles looked up (vpermps) in the e2m1 table pre-scaled by the block's exponent, and
// multiplied with x reordered to match (a.xp: the block's even elements, then its odd ones), so
// no interleaving is needed. NR weight rows per tile share each load of x. kSplit: low and high
// halves accumulate in separate registers (m = 1, where the FMA chains are few); otherwise one
// register per (row of x, weight row), which keeps every tile within the 32 zmm registers
// (single-thread, L2-resident, rows x GB/s of MXFP4 bytes at m = 4: 14.0 with split
// accumulators and NR = 2, 23.7 merged with NR = 4; linear_bench --only resident).
template <int MR, int NR, bool kSplit = true>
void GemvMxfp4T(const LinearArgs& a, int64_t j0, int64_t j1) {
  const uint8_t* w = static_cast<const uint8_t*>(a.w);
  const int64_t row_codes = a.k / 2, blocks = a.k / kMxfp4BlockSize;
  int64_t j = j0;
  auto tile = [&](auto nr_tag) {
    constexpr int R = decltype(nr_tag)::value;
    __m512 lo_acc[MR][R], hi_acc[MR][R];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) lo_acc[i][r] = hi_acc[i][r] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      __m512 lo[R], hi[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 table = Vec::Mxfp4Table(a.mx_scales[(j + r) * blocks + b]);
        const __m512i c = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (j + r) * row_codes + b * 16)));
        lo[r] = _mm512_permutexvar_ps(c, table);
        hi[r] = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), table);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 xe = _mm512_loadu_ps(a.xp + i * a.ldxp + b * kMxfp4BlockSize);
        const __m512 xo = _mm512_loadu_ps(a.xp + i * a.ldxp + b * kMxfp4BlockSize + 16);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          lo_acc[i][r] = _mm512_fmadd_ps(xe, lo[r], lo_acc[i][r]);
          if constexpr (kSplit) {
            hi_acc[i][r] = _mm512_fmadd_ps(xo, hi[r], hi_acc[i][r]);
          } else {
            lo_acc[i][r] = _mm512_fmadd_ps(xo, hi[r], lo_acc[i][r]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        a.out[i * a.ldo + j + r] = _mm512_reduce_add_ps(_mm512_add_ps(lo_acc[i][r], hi_acc[i][r])) +
                                   (a.bias != nullptr ? a.bias[j + r] : 0.0f);
      }
    }
  };
  for (; j + NR <= j1; j += NR) tile(std::integral_constant<int, NR>());
  for (; j < j1; ++j) tile(std::integral_constant<int, 1>());
}

}  // namespace

void GemvMxfp4(const LinearArgs& a, int64_t j0, int64_t j1) {
  switch (a.m) {
    case 1: return GemvMxfp4T<1, 4>(a, j0, j1);
    case 2: return GemvMxfp4T<2, 4, false>(a, j0, j1);
    case 3: return GemvMxfp4T<3, 4, false>(a, j0, j1);
    case 4: return GemvMxfp4T<4, 4, false>(a, j0, j1);
    case 5: return GemvMxfp4T<5, 2, false>(a, j0, j1);
    case 6: return GemvMxfp4T<6, 2, false>(a, j0, j1);
    case 7: return GemvMxfp4T<7, 2, false>(a, j0, j1);
    case 8: return GemvMxfp4T<8, 2, false>(a, j0, j1);
    default: CHECK(false) << "GemvMxfp4 with m = " << a.m;
  }
}

void GemvBf16Dot(const LinearArgs& a, int64_t j0, int64_t j1) {
  switch (a.m) {
    case 1: return GemvBf16DotT<1>(a, j0, j1);
    case 2: return GemvBf16DotT<2>(a, j0, j1);
    case 3: return GemvBf16DotT<3>(a, j0, j1);
    case 4: return GemvBf16DotTile<4, 4>(a, j0, j1);
    case 5: return GemvBf16DotTile<5, 4>(a, j0, j1);
    case 6: return GemvBf16DotTile<6, 4>(a, j0, j1);
    case 7: return GemvBf16DotTile<7, 2>(a, j0, j1);
    case 8: return GemvBf16DotTile<8, 2>(a, j0, j1);
    default: CHECK(false) << "GemvBf16Dot with m = " << a.m;
  }
}

void ConvertRowsToBf16(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* dst,
                       int64_t ldd) {
  for (int64_t i = 0; i < m; ++i) {
    const float* src = x + i * ldx;
    uint16_t* d = dst + i * ldd;
    int64_t c = 0;
    for (; c + 32 <= k; c += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16), _mm512_loadu_ps(src + c));
      _mm512_storeu_si512(d + c, (__m512i)v);
    }
    for (; c < k; ++c) d[c] = FloatToBf16(src[c]);
    for (; c < ldd; ++c) d[c] = 0;
  }
}

void GemmBf16Dot(const LinearArgs& a, const uint16_t* xb, int64_t ldxb, int64_t i0, int64_t i1,
                 int64_t j0, int64_t j1) {
  static constexpr auto kKernels =
      MakeMicroKernelsBf16(std::make_integer_sequence<int, kGemmMr>());
  thread_local std::vector<uint32_t> packed_storage;
  packed_storage.resize(static_cast<size_t>(kBf16Kc / 2) * kBf16Nr + 16);
  uint32_t* packed = reinterpret_cast<uint32_t*>(
      (reinterpret_cast<uintptr_t>(packed_storage.data()) + 63) & ~static_cast<uintptr_t>(63));
  for (int64_t k0 = 0; k0 < a.k; k0 += kBf16Kc) {
    const int64_t kc = std::min<int64_t>(kBf16Kc, a.k - k0);
    const int64_t pairs = (kc + 1) / 2;
    for (int64_t j = j0; j < j1; j += kBf16Nr) {
      const int nvalid = static_cast<int>(std::min<int64_t>(kBf16Nr, j1 - j));
      PackPanelBf16Pairs(a, j, nvalid, k0, kc, packed);
      for (int64_t i = i0; i < i1; i += kGemmMr) {
        const int rows = static_cast<int>(std::min<int64_t>(kGemmMr, i1 - i));
        kKernels[rows - 1](xb + i * ldxb + k0, ldxb, packed, pairs, a.out + i * a.ldo + j, a.ldo,
                           nvalid, k0 > 0);
      }
    }
  }
  if (a.bias != nullptr) {
    for (int64_t i = i0; i < i1; ++i) {
      float* o = a.out + i * a.ldo;
      for (int64_t j = j0; j < j1; ++j) o[j] += a.bias[j];
    }
  }
}

void Gemv(const LinearArgs& a, int64_t j0, int64_t j1) {
  if (a.mx_scales != nullptr) {
    CHECK(a.xp != nullptr && a.xp_half == 16)
        << "AVX-512 MXFP4 GEMV without x reordered for it (AttachMxfp4X)";
    return GemvMxfp4(a, j0, j1);
  }
  if (a.xb != nullptr) return GemvBf16Dot(a, j0, j1);
  GemvImpl(a, j0, j1);
}
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  GemmImpl(a, i0, i1, j0, j1);
}

}  // namespace tessera::cpu::avx512
