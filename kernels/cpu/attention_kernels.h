// Inner loops of the CPU paged-attention kernel (kernels/cpu/attention.cc), one set per ISA:
// portable (attention.cc), AVX2+FMA (attention_avx2.cc) and AVX-512 (attention_avx512.cc, whose
// value accumulation is multi-row: AccumulateRowsAvx512).
// The ISA variants may only be called after a run-time check (cpu::ActiveIsa()).
//
// Contract (all pointers non-null unless the count is 0; rows are contiguous f32):
// - ScoresRow:     s[j] = dot(q[0:dk], keys[j][0:dk]) for j in [0, n).
// - AccumulateRow: acc[0:dv] = alpha * acc[0:dv] + sum_j p[j] * values[j][0:dv].
// - AccumulateRows: AccumulateRow for `rows` rows at once (acc row r at acc + r * acc_stride,
//                   weights p + r * p_stride, alpha[r]), sharing each value load across rows.
// Thread safety: pure functions of their arguments.
#pragma once

#include <cstdint>

namespace tessera::cpu::attention_internal {

using ScoresRowFn = void (*)(const float* q, const float* const* keys, int64_t n, int64_t dk,
                             float* s);
using AccumulateRowFn = void (*)(float* acc, float alpha, const float* p,
                                 const float* const* values, int64_t n, int64_t dv);

void ScoresRowScalar(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s);
void AccumulateRowScalar(float* acc, float alpha, const float* p, const float* const* values,
                         int64_t n, int64_t dv);

void ScoresRowAvx2(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s);
void AccumulateRowAvx2(float* acc, float alpha, const float* p, const float* const* values,
                       int64_t n, int64_t dv);

void ScoresRowAvx512(const float* q, const float* const* keys, int64_t n, int64_t dk, float* s);

void AccumulateRowsAvx512(float* acc, int64_t acc_stride, const float* alpha, const float* p,
                          int64_t p_stride, int64_t rows, const float* const* values, int64_t n,
                          int64_t dv);

}  // namespace tessera::cpu::attention_internal
