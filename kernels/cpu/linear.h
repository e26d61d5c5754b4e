// CPU Linear kernels: out = x · Wᵀ (+ bias) for f32 activations and f32 / bf16 / f16 / fp8 e4m3
// (block-scaled) weights.
//
// LinearCpu() is what tessera::Linear calls for CPU tensors (after ValidateLinearArgs). It picks
// the ISA at run time (cpu_features.h: AVX-512, AVX2+FMA or scalar) and the algorithm by the
// number of rows:
// - m <= kGemvMaxRows (decode): a GEMV-shaped kernel that streams every weight row exactly once,
//   converting it to f32 in registers and multiplying it against all m rows of x; threads split n
//   into contiguous ranges so each streams its own slice of the weight.
// - m <= kSmallGemmMaxRows (batched decode): the same kernel over chunks of ~4 rows of x (where
//   its multiply-add rate peaks), the weights in ~128 KiB column blocks that every chunk after
//   the first reads from L2 (GemvRowChunks in linear.cc).
// - larger m (prefill): a blocked GEMM; weight panels of kGemmPanel rows x a k-block are converted
//   and packed once, then a register-blocked outer-product micro-kernel sweeps all rows of x.
// Everything accumulates in f32 (f32 weights give f32-exact results up to summation order).
//
// The per-ISA entry points below work on a column range [j0, j1) (and row range for the GEMM) so
// the caller owns the threading. Thread safety: calls on disjoint output ranges may run
// concurrently.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/base/dtype.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cpu {

// The largest m handled by the GEMV-shaped kernel.
inline constexpr int64_t kGemvMaxRows = 8;
// Up to this many rows (batched decode) the GEMV kernel still serves, over row chunks of x with
// L2-sized weight blocks; the packed GEMM's per-panel packing costs more than it saves until m is
// larger.
inline constexpr int64_t kSmallGemmMaxRows = 32;

// Raw operands of one Linear call (pointers into validated CPU tensors).
struct LinearArgs {
  const float* x = nullptr;  // [m, k], row stride ldx
  int64_t ldx = 0;
  int64_t m = 0, n = 0, k = 0;
  const void* w = nullptr;  // [n, k] contiguous, dtype w_dtype
  DType w_dtype = DType::kF32;
  const float* scale_inv = nullptr;  // fp8 only: [ceil(n/block_n), scale_cols] or nullptr
  int64_t scale_cols = 0;
  int block_n = 128, block_k = 128;
  const float* bias = nullptr;  // [n] or nullptr
  float* out = nullptr;         // [m, n], row stride ldo
  int64_t ldo = 0;
  // Set by the dispatcher for the opt-in bf16 dot-product path (bf16 weights, AVX512_BF16, see
  // SetBf16DotGemm): x rounded to bf16, rows ldxb elements apart, zero-padded to a multiple of 32.
  const uint16_t* xb = nullptr;
  int64_t ldxb = 0;
  bool f32_input = false;  // LinearWeight::f32_input: never take the bf16 dot path
  // MXFP4 weights (w_dtype kU8, w = [n, k / 2] code pairs): [n, k / 32] E8M0 exponents.
  const uint8_t* mx_scales = nullptr;
  // Set by the dispatcher for the MXFP4 GEMVs: x with every group of 2 * xp_half elements
  // reordered as its xp_half even then xp_half odd elements (PermuteRowsForMxfp4; matching the
  // low / high nibbles of the code bytes): xp_half 16 for AVX-512, 4 for AVX2. Rows ldxp apart.
  const float* xp = nullptr;
  int64_t ldxp = 0;
  int xp_half = 0;
};

// MXFP4 helpers shared by the kernels (the e2m1 table, kE2M1Values, is in kernels/ops.h).
// Decodes elements [c0, c0 + count) of one MXFP4 row (codes: the row's k / 2 bytes; scales: its
// k / 32 exponents) to f32.
void Mxfp4RowToF32(const uint8_t* codes, const uint8_t* scales, int64_t c0, int64_t count,
                   float* out);
// Reorders x rows [m, k] (k a multiple of 32, row stride ldx) into dst [m, k] (row stride k) with
// every group of 2 * half elements (half: 16 for the AVX-512 GEMV, 4 for the AVX2 one; it must
// divide 16) stored as its half even elements then its half odd elements.
void PermuteRowsForMxfp4(const float* x, int64_t ldx, int64_t m, int64_t k, int half, float* dst);

// out = x · Wᵀ (+ bias) on the CPU; operands already validated by ValidateLinearArgs.
absl::Status LinearCpu(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out);
// tessera::LinearGroup on the CPU; every problem already validated.
absl::Status LinearGroupCpu(absl::Span<const LinearProblem> problems);

// Per-ISA kernels. Gemv* compute out[0, m)[j0, j1) including bias (m <= kGemvMaxRows);
// Gemm* compute out[i0, i1)[j0, j1) including bias. k >= 1.
void GemvScalar(const LinearArgs& a, int64_t j0, int64_t j1);
void GemmScalar(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1);
namespace avx2 {
void Gemv(const LinearArgs& a, int64_t j0, int64_t j1);
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1);
// MXFP4 weights (a.mx_scales set): the GEMV on a.xp (PermuteRowsForMxfp4 with half = 4),
// m <= kGemvMaxRows. Gemv() takes this path for MXFP4 weights; Gemm() decodes weight panels.
void GemvMxfp4(const LinearArgs& a, int64_t j0, int64_t j1);
}  // namespace avx2
namespace avx512 {
void Gemv(const LinearArgs& a, int64_t j0, int64_t j1);
void Gemm(const LinearArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1);
// Requires AVX512_BF16. Rounds x rows [m, k] (row stride ldx) to bf16 into dst [m, ldd]
// (ldd >= k, even), zero-padding columns [k, ldd).
void ConvertRowsToBf16(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* dst,
                       int64_t ldd);
// MXFP4 weights (a.mx_scales set): the GEMV on a.xp (PermuteRowsForMxfp4 with half = 16),
// m <= kGemvMaxRows.
void GemvMxfp4(const LinearArgs& a, int64_t j0, int64_t j1);
// Requires AVX512_BF16 and bf16 weights: the GEMM on activations already rounded to bf16
// (xb: [m, ldxb] from ConvertRowsToBf16) with vdpbf16ps; f32 accumulation.
void GemmBf16Dot(const LinearArgs& a, const uint16_t* xb, int64_t ldxb, int64_t i0, int64_t i1,
                 int64_t j0, int64_t j1);
// Requires AVX512_BF16, bf16 weights and a.xb: the GEMV (m <= kGemvMaxRows) with vdpbf16ps.
// Gemv() takes this path whenever a.xb is set.
void GemvBf16Dot(const LinearArgs& a, int64_t j0, int64_t j1);
}  // namespace avx512

// Whether Linear on bf16 weights may round activations to bf16 and use AVX512_BF16 dot products
// (vdpbf16ps: twice the f32 FMA rate, and no weight conversion), as llama.cpp and oneDNN do:
// relative error ~1e-3 instead of f32-exact. Applies to the prefill GEMM and the decode GEMV
// (GemvBf16Dot). Off unless TESSERA_LINEAR_BF16_DOT=1 or enabled here; other weight dtypes are
// never affected.
bool Bf16DotGemmEnabled();
// This CPU runs the bf16 dot-product path (AVX-512 active and AVX512_BF16 present).
bool Bf16DotGemmSupported();
void SetBf16DotGemm(bool enabled);

}  // namespace tessera::cpu
