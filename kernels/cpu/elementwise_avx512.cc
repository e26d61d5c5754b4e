// AVX-512 row kernels for kernels/cpu/elementwise.h (see elementwise_kernels.h). Compiled with
// -mavx512f and friends; entered only after a run-time CPU check.

// GCC 12 reports its own _mm512_undefined_ps() operands inside avx512fintrin.h (used by
// _mm512_reduce_* and the max/min intrinsics) as uninitialised (GCC bug 105593); the warning is
// a false positive and is silenced for this file only.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "kernels/cpu/elementwise_kernels.h"

namespace tessera::cpu::internal {
namespace {

inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

// exp(x) for f32 lanes: range reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial
// (Cephes expf coefficients), then scalef by 2^n. Relative error about 2 ulp; exp(-inf) = 0,
// exp(+inf) = inf, large negative inputs flush to 0.
inline __m512 Exp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-104.0f);
  const __m512 hi = _mm512_set1_ps(89.0f);
  // NaN lanes are restored at the end.
  const __mmask16 nan_mask = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512 result = _mm512_scalef_ps(p, n);
  return _mm512_mask_mov_ps(result, nan_mask, x);
}

}  // namespace

float SumSquaresAvx512(const float* x, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    __m512 c = _mm512_loadu_ps(x + i + 32), d = _mm512_loadu_ps(x + i + 48);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
    acc1 = _mm512_fmadd_ps(b, b, acc1);
    acc2 = _mm512_fmadd_ps(c, c, acc2);
    acc3 = _mm512_fmadd_ps(d, d, acc3);
  }
  for (; i < n; i += 16) {
    __m512 a = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

void ScaleRowAvx512(const float* x, float inv_rms, const float* weight, float* out, int64_t n) {
  const __m512 s = _mm512_set1_ps(inv_rms);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __m512 w = _mm512_maskz_loadu_ps(m, weight + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(v, s), w));
  }
}

float AddSumSquaresAvx512(float* residual, const float* delta, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 a = _mm512_add_ps(_mm512_loadu_ps(residual + i), _mm512_loadu_ps(delta + i));
    __m512 b = _mm512_add_ps(_mm512_loadu_ps(residual + i + 16), _mm512_loadu_ps(delta + i + 16));
    _mm512_storeu_ps(residual + i, a);
    _mm512_storeu_ps(residual + i + 16, b);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
    acc1 = _mm512_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512 a =
        _mm512_add_ps(_mm512_maskz_loadu_ps(m, residual + i), _mm512_maskz_loadu_ps(m, delta + i));
    _mm512_mask_storeu_ps(residual + i, m, a);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

void SiluMulAvx512(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    __m512 u = _mm512_maskz_loadu_ps(m, up + i);
    __m512 e = Exp(_mm512_xor_ps(g, sign));
    __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, u));
  }
}

void ClampedSwiGluAvx512(const float* in, float alpha, float limit, float* out, int64_t n) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 hi = _mm512_set1_ps(limit), lo = _mm512_set1_ps(-limit);
  const __m512 va = _mm512_set1_ps(alpha), one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t remaining = n - i;
    const __mmask16 m = TailMask(remaining);
    const __mmask16 m0 = TailMask(2 * remaining);
    const __mmask16 m1 = remaining > 8 ? TailMask(2 * remaining - 16) : static_cast<__mmask16>(0);
    __m512 a = _mm512_maskz_loadu_ps(m0, in + 2 * i);
    __m512 b = _mm512_maskz_loadu_ps(m1, in + 2 * i + 16);
    __m512 gate = _mm512_permutex2var_ps(a, even, b);
    __m512 up = _mm512_permutex2var_ps(a, odd, b);
    // min/max return the second operand for NaN; keep NaN lanes as torch.clamp does.
    const __mmask16 gate_nan = _mm512_cmp_ps_mask(gate, gate, _CMP_UNORD_Q);
    const __mmask16 up_nan = _mm512_cmp_ps_mask(up, up, _CMP_UNORD_Q);
    gate = _mm512_mask_mov_ps(_mm512_min_ps(gate, hi), gate_nan, gate);
    up = _mm512_mask_mov_ps(_mm512_max_ps(_mm512_min_ps(up, hi), lo), up_nan, up);
    __m512 e = Exp(_mm512_xor_ps(_mm512_mul_ps(gate, va), sign));
    __m512 glu = _mm512_mul_ps(gate, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_add_ps(up, one), glu));
  }
}

void SoftmaxRowAvx512(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  const __m512 s = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), s));
  }
}

void AxpyRowAvx512(float scale, const float* x, float* out, int64_t n) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __m512 o = _mm512_maskz_loadu_ps(m, out + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_fmadd_ps(v, s, o));
  }
}

}  // namespace tessera::cpu::internal
