// Row kernels behind kernels/cpu/elementwise.h: a portable version of each (elementwise.cc)
// and an AVX-512 version (elementwise_avx512.cc, compiled with -mavx512f...; call it only when
// the CPU supports AVX-512F, see Avx512Enabled()).
//
// All pointers address contiguous f32 rows of n elements; outputs may alias inputs exactly
// (same pointer), never partially. Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace tessera::cpu::internal {

// Σ x[i]^2 in f32.
float SumSquaresPortable(const float* x, int64_t n);
float SumSquaresAvx512(const float* x, int64_t n);

// out[i] = (x[i] * inv_rms) * weight[i]   (LlamaRMSNorm's order of operations).
void ScaleRowPortable(const float* x, float inv_rms, const float* weight, float* out, int64_t n);
void ScaleRowAvx512(const float* x, float inv_rms, const float* weight, float* out, int64_t n);

// residual[i] += delta[i]; returns Σ residual[i]^2 (after the add) in f32.
float AddSumSquaresPortable(float* residual, const float* delta, int64_t n);
float AddSumSquaresAvx512(float* residual, const float* delta, int64_t n);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
void SiluMulPortable(const float* gate, const float* up, float* out, int64_t n);
void SiluMulAvx512(const float* gate, const float* up, float* out, int64_t n);

// gpt-oss clamped SwiGLU over interleaved (gate, up) pairs: in has 2n elements, out n.
void ClampedSwiGluPortable(const float* in, float alpha, float limit, float* out, int64_t n);
void ClampedSwiGluAvx512(const float* in, float alpha, float limit, float* out, int64_t n);

// In-place softmax of one row: exp(x - max) / Σ exp(x - max).
void SoftmaxRowPortable(float* x, int64_t n);
void SoftmaxRowAvx512(float* x, int64_t n);

// out[i] += scale * x[i].
void AxpyRowPortable(float scale, const float* x, float* out, int64_t n);
void AxpyRowAvx512(float scale, const float* x, float* out, int64_t n);

}  // namespace tessera::cpu::internal
