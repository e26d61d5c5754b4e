// AVX2+FMA inner loops of the paged-attention kernel; see attention_kernels.h. Compiled with
// -mavx2 -mfma; entered only when cpu::ActiveIsa() is at least kAvx2.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/attention_kernels.h"

namespace tessera::cpu::attention_internal {
namespace {

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

}  // namespace

void ScoresRowAvx2(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s) {
  const int64_t dk8 = dk & ~int64_t{7};
  for (int64_t j = 0; j < n; ++j) {
    const float* k = keys[j];
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= dk8; d += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), _mm256_loadu_ps(k + d + 8), a1);
    }
    for (; d < dk8; d += 8) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), a0);
    }
    float sum = HorizontalSum(_mm256_add_ps(a0, a1));
    for (; d < dk; ++d) sum += q[d] * k[d];
    s[j] = sum;
  }
}

void AccumulateRowAvx2(float* acc, float alpha, const float* p, const float* const* values,
                       int64_t n, int64_t dv) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t d = 0;
  for (; d + 32 <= dv; d += 32) {
    __m256 c0 = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d));
    __m256 c1 = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d + 8));
    __m256 c2 = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d + 16));
    __m256 c3 = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d + 24));
    for (int64_t j = 0; j < n; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const float* v = values[j] + d;
      c0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), c0);
      c1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), c1);
      c2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), c2);
      c3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), c3);
    }
    _mm256_storeu_ps(acc + d, c0);
    _mm256_storeu_ps(acc + d + 8, c1);
    _mm256_storeu_ps(acc + d + 16, c2);
    _mm256_storeu_ps(acc + d + 24, c3);
  }
  for (; d + 8 <= dv; d += 8) {
    __m256 c0 = _mm256_mul_ps(va, _mm256_loadu_ps(acc + d));
    for (int64_t j = 0; j < n; ++j) {
      c0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(values[j] + d), c0);
    }
    _mm256_storeu_ps(acc + d, c0);
  }
  for (; d < dv; ++d) {
    float c = alpha * acc[d];
    for (int64_t j = 0; j < n; ++j) c += p[j] * values[j][d];
    acc[d] = c;
  }
}

}  // namespace tessera::cpu::attention_internal
