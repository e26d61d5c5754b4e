// AVX-512 pieces of the CPU sampler (sampling.cc): the sum of exp(l - max) over a vocabulary row
// used for the raw log-softmax, and the sampling weights exp((l - max) / T). Compiled with
// -mavx512f...; entered only when cpu::ActiveIsa() is kAvx512. Thread safety: pure function.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/sampling_kernels.h"

namespace tessera::cpu::sampling_internal {
namespace {

// exp(x) for x <= 0: 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2, p a degree-6
// polynomial; relative error ~2e-7. x < -87 (including -inf) gives exactly 0.
inline __m512 Exp(__m512 x) {
  const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm512_maskz_max_ps(0xFFFF, x, _mm512_set1_ps(-87.0f));
  const __m512 n =
      _mm512_maskz_roundscale_ps(0xFFFF, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(normal, p, n);
}

}  // namespace

double SumExpAvx512(const float* x, int64_t n, float max_value) {
  const __m512 m = _mm512_set1_ps(max_value);
  double total = 0.0;
  // Blocks of 1024 are summed in f32 lanes, then added in double.
  for (int64_t b = 0; b < n; b += 1024) {
    const int64_t e = b + 1024 < n ? b + 1024 : n;
    __m512 acc = _mm512_setzero_ps();
    int64_t i = b;
    for (; i + 16 <= e; i += 16) {
      acc = _mm512_add_ps(acc, Exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), m)));
    }
    if (i < e) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (e - i)) - 1u);
      const __m512 v = _mm512_mask_loadu_ps(m, mask, x + i);  // masked lanes: exp(0) = 1
      acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, Exp(_mm512_sub_ps(v, m))));
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    float s = 0.0f;
    for (float lane : lanes) s += lane;
    total += s;
  }
  return total;
}

void WeightsAvx512(const float* x, int64_t n, float max_value, float temperature, float* w) {
  const __m512 m = _mm512_set1_ps(max_value);
  const __m512 t = _mm512_set1_ps(temperature);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(w + i, Exp(_mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), m), t)));
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_mask_loadu_ps(m, mask, x + i);
    _mm512_mask_storeu_ps(w + i, mask, Exp(_mm512_div_ps(_mm512_sub_ps(v, m), t)));
  }
}

}  // namespace tessera::cpu::sampling_internal
