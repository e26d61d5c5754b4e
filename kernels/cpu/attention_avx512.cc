// AVX-512 inner loops of the paged-attention kernel; see attention_kernels.h. Compiled with
// -mavx512f...; entered only when cpu::ActiveIsa() is kAvx512.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_kernels.h"

namespace tessera::cpu::attention_internal {
namespace {

inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

// Sum of the 16 lanes (without _mm512_reduce_add_ps, whose GCC 12 expansion warns).
inline float ReduceAdd(__m512 v) {
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, 0xB1));
  __m128 x = _mm512_maskz_extractf32x4_ps(0xF, v, 0);
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

}  // namespace

void ScoresRowAvx512(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s) {
  int64_t j = 0;
  // Four keys at a time share the loads of q.
  for (; j + 4 <= n; j += 4) {
    const float* k0 = keys[j];
    const float* k1 = keys[j + 1];
    const float* k2 = keys[j + 2];
    const float* k3 = keys[j + 3];
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (int64_t d = 0; d < dk; d += 16) {
      const __mmask16 m = TailMask(dk - d);
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
      a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + d), a0);
      a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k1 + d), a1);
      a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k2 + d), a2);
      a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k3 + d), a3);
    }
    s[j] = ReduceAdd(a0);
    s[j + 1] = ReduceAdd(a1);
    s[j + 2] = ReduceAdd(a2);
    s[j + 3] = ReduceAdd(a3);
  }
  for (; j < n; ++j) {
    const float* k0 = keys[j];
    __m512 a0 = _mm512_setzero_ps();
    for (int64_t d = 0; d < dk; d += 16) {
      const __mmask16 m = TailMask(dk - d);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, k0 + d), a0);
    }
    s[j] = ReduceAdd(a0);
  }
}

namespace {

// acc rows [R][acc_stride] = alpha[r] * acc[r] + sum_j p[r][j] * values[j], columns [d0, d0 + 16*C)
// with the last 16-column group masked by `tail`.
template <int R, int C>
inline void AccumulateBlock(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                            int64_t p_stride, const float* const* values, int64_t n, int64_t d0,
                            __mmask16 tail) {
  __m512 c[R][C];
  for (int r = 0; r < R; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
    for (int i = 0; i < C; ++i) {
      const __mmask16 m = i == C - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      c[r][i] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, acc + r * acc_stride + d0 + 16 * i));
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    __m512 v[C];
    for (int i = 0; i < C; ++i) {
      const __mmask16 m = i == C - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      v[i] = _mm512_maskz_loadu_ps(m, values[j] + d0 + 16 * i);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 pj = _mm512_set1_ps(p[r * p_stride + j]);
      for (int i = 0; i < C; ++i) c[r][i] = _mm512_fmadd_ps(pj, v[i], c[r][i]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < C; ++i) {
      const __mmask16 m = i == C - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      _mm512_mask_storeu_ps(acc + r * acc_stride + d0 + 16 * i, m, c[r][i]);
    }
  }
}

template <int R>
inline void AccumulateRowBlock(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                               int64_t p_stride, const float* const* values, int64_t n,
                               int64_t dv) {
  int64_t d = 0;
  for (; d + 64 <= dv; d += 64) {
    AccumulateBlock<R, 4>(acc, acc_stride, alpha, p, p_stride, values, n, d, 0xFFFF);
  }
  for (; d < dv; d += 16) {
    AccumulateBlock<R, 1>(acc, acc_stride, alpha, p, p_stride, values, n, d, TailMask(dv - d));
  }
}

}  // namespace

void AccumulateRowsAvx512(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                          int64_t p_stride, int64_t rows, const float* const* values, int64_t n,
                          int64_t dv) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    AccumulateRowBlock<4>(acc + r * acc_stride, acc_stride, alpha + r, p + r * p_stride, p_stride,
                          values, n, dv);
  }
  for (; r < rows; ++r) {
    AccumulateRowBlock<1>(acc + r * acc_stride, acc_stride, alpha + r, p + r * p_stride, p_stride,
                          values, n, dv);
  }
}

}  // namespace tessera::cpu::attention_internal
