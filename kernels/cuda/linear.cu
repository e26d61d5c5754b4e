// CUDA Linear: out = x · Wᵀ (+ bias) (kernels/cuda/ops_cuda.h).
//
// Decode (m <= kGemvMaxRows): GemvKernel, one warp per output feature, streaming each weight row
// once with 16-byte loads where the row allows, dequantising (bf16, f16, fp8 e4m3 times its
// 128x128 block scale) in registers and accumulating all m rows of x in f32.
// Prefill (larger m): cuBLASLt, column-major view outᵀ[n, m] = W[n, k] · xᵀ with W transposed:
//   f32 weights: f32 operands, CUBLAS_COMPUTE_32F (no TF32: matches the CPU result to ~1e-6);
//   bf16 / f16 weights: x rounded to the weight dtype into scratch, f32 accumulate and output;
//   fp8 weights: dequantised (with block scales) to a bf16 scratch copy, then as bf16. A
//   block-scaled fp8 cuBLASLt GEMM (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F for W,
//   VEC128_32F for x quantised per 1x128 group) would avoid the copy; it needs a GPU to validate.
// The bias is the cuBLASLt BIAS epilogue (a vector over n).
#include <cublasLt.h>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/reference_linear.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kGemvWarps = 8;

struct GemvArgs {
  const float* x;
  int64_t ldx;
  int m;
  int64_t n, k;
  const void* w;
  const float* scale_inv;  // nullptr: no scales
  int64_t scale_cols;
  int block_n, block_k;
  const float* bias;  // nullptr: none
  float* out;
  int64_t ldo;
  bool vectorized;  // rows of W and x 16-byte aligned, k a multiple of the vector width
};

template <typename W>
__global__ void __launch_bounds__(kGemvWarps * 32) GemvKernel(GemvArgs a) {
  constexpr int kVec = 16 / sizeof(W);  // weight elements per 16-byte load
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (j >= a.n) return;
  const W* wrow = static_cast<const W*>(a.w) + j * a.k;
  const float* srow = a.scale_inv ? a.scale_inv + (j / a.block_n) * a.scale_cols : nullptr;
  float acc[kGemvMaxRows];
#pragma unroll
  for (int r = 0; r < kGemvMaxRows; ++r) acc[r] = 0.0f;
  int64_t k0 = 0;
  if (a.vectorized) {
    // Unrolled so several 16-byte weight loads are in flight per lane before their FMAs.
#pragma unroll 4
    for (int64_t base = static_cast<int64_t>(lane) * kVec; base + kVec <= a.k;
         base += 32 * kVec) {
      const uint4 raw = *reinterpret_cast<const uint4*>(wrow + base);
      const W* wv = reinterpret_cast<const W*>(&raw);
      const float scale = srow ? srow[base / a.block_k] : 1.0f;  // kVec divides block_k
      float wf[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) wf[e] = ToFloat(wv[e]) * scale;
#pragma unroll
      for (int r = 0; r < kGemvMaxRows; ++r) {
        if (r < a.m) {
          const float4* xr = reinterpret_cast<const float4*>(a.x + r * a.ldx + base);
#pragma unroll
          for (int q = 0; q < kVec / 4; ++q) {
            const float4 xv = xr[q];
            acc[r] += wf[4 * q] * xv.x + wf[4 * q + 1] * xv.y + wf[4 * q + 2] * xv.z +
                      wf[4 * q + 3] * xv.w;
          }
        }
      }
    }
    k0 = a.k;  // the host only vectorises when kVec divides k
  }
  for (int64_t kk = k0 + lane; kk < a.k; kk += 32) {
    float wf = ToFloat(wrow[kk]);
    if (srow) wf *= srow[kk / a.block_k];
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r) {
      if (r < a.m) acc[r] += wf * a.x[r * a.ldx + kk];
    }
  }
  const float b = a.bias ? a.bias[j] : 0.0f;
#pragma unroll
  for (int r = 0; r < kGemvMaxRows; ++r) {
    if (r < a.m) {
      const float s = WarpSum(acc[r]);
      if (lane == 0) a.out[r * a.ldo + j] = s + b;
    }
  }
}

__device__ __forceinline__ void StoreRounded(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void StoreRounded(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// dst[i][c] = T(x[i * ldx + c]) for a [m, k] block (dst contiguous).
template <typename T>
__global__ void RoundRowsKernel(const float* x, int64_t ldx, int64_t m, int64_t k, T* dst) {
  const int64_t total = m * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / k, c = i % k;
    StoreRounded(dst + i, x[r * ldx + c]);
  }
}

// dst = bf16(w * scale) for an fp8 [n, k] weight.
__global__ void DequantFp8Kernel(const __nv_fp8_e4m3* w, const float* scale_inv,
                                 int64_t scale_cols, int block_n, int block_k, int64_t n,
                                 int64_t k, __nv_bfloat16* dst) {
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / k, c = i % k;
    float v = static_cast<float>(w[i]);
    if (scale_inv) v *= scale_inv[(r / block_n) * scale_cols + c / block_k];
    dst[i] = __float2bfloat16_rn(v);
  }
}

unsigned ElementwiseGrid(int64_t total) {
  const int64_t blocks = (total + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

int AlignmentOf(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  for (int a = 256; a > 1; a /= 2) {
    if (v % a == 0) return a;
  }
  return 1;
}

// Owning wrappers of the cuBLASLt descriptors of one call.
struct MatmulDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~MatmulDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// outᵀ [n, m] (column-major, ld ldo) = Wᵀᵀ · xᵀ with W [n, k] row-major (= column-major [k, n],
// transposed) and x [m, k] row-major (= column-major [k, m], ld ldx).
absl::Status CublasLtLinear(DeviceContext* ctx, cudaDataType_t ab_type, const void* x,
                            int64_t ldx, const void* w, int64_t m, int64_t n, int64_t k,
                            const float* bias, float* out, int64_t ldo) {
  MatmulDescs desc;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                        &trans_a, sizeof(trans_a)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                        &trans_b, sizeof(trans_b)));
  if (bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    const cudaDataType_t bias_type = CUDA_R_32F;
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&desc.a, ab_type, k, n, k));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&desc.b, ab_type, k, m, ldx));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&desc.d, CUDA_R_32F, n, m, ldo));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&desc.pref));
  const uint64_t workspace = ctx->cublas_workspace_bytes();
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  const uint32_t align_a = AlignmentOf(w), align_b = AlignmentOf(x), align_d = AlignmentOf(out);
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(ctx->cublaslt(), desc.op, desc.a, desc.b,
                                                        desc.d, desc.d, desc.pref, 1, &heuristic,
                                                        &found));
  if (found == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "Linear: cuBLASLt has no algorithm for m=", m, " n=", n, " k=", k, " (ld x ", ldx,
        ", ld out ", ldo, ")"));
  }
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(ctx->cublaslt(), desc.op, &alpha, w, desc.a, x, desc.b,
                                        &beta, out, desc.d, out, desc.d, &heuristic.algo,
                                        ctx->cublas_workspace(), workspace, ctx->stream()));
  return absl::OkStatus();
}

absl::Status LaunchGemv(DeviceContext* ctx, const GemvArgs& args, DType dtype) {
  const unsigned grid = GridFor(args.n, kGemvWarps);
  const int threads = kGemvWarps * 32;
  switch (dtype) {
    case DType::kF32: GemvKernel<float><<<grid, threads, 0, ctx->stream()>>>(args); break;
    case DType::kBF16: GemvKernel<__nv_bfloat16><<<grid, threads, 0, ctx->stream()>>>(args); break;
    case DType::kF16: GemvKernel<__half><<<grid, threads, 0, ctx->stream()>>>(args); break;
    case DType::kF8E4M3:
      GemvKernel<__nv_fp8_e4m3><<<grid, threads, 0, ctx->stream()>>>(args);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Linear: weight dtype ", DTypeName(dtype), " is not supported"));
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace

absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateLinearArgs(x, w, bias, out));
  if (w.is_mxfp4()) {
    return absl::UnimplementedError(
        "Linear: MXFP4 weights have no CUDA kernel yet (CPU workers run them)");
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("Linear", {{"x", &x},
                                         {"weight", &w.weight},
                                         {"scale_inv", &w.scale_inv},
                                         {"bias", &bias},
                                         {"out", &out}}));
  const int64_t m = x.dim(0), n = w.weight.dim(0), k = x.dim(1);
  if (m == 0 || n == 0) return absl::OkStatus();
  const int64_t ldx = m > 1 ? x.stride(0) : k;
  const int64_t ldo = m > 1 ? out.stride(0) : n;
  const DType dtype = w.weight.dtype();
  const float* bias_ptr = bias.defined() ? bias.data<float>() : nullptr;
  const float* scale_ptr = w.scale_inv.defined() ? w.scale_inv.data<float>() : nullptr;
  const int64_t scale_cols = w.scale_inv.defined() ? w.scale_inv.dim(1) : 0;
  if (k == 0) {
    return absl::InvalidArgumentError("Linear: in_features k = 0 is not supported on CUDA");
  }
  if (m <= kGemvMaxRows) {
    GemvArgs args{x.data<float>(), ldx, static_cast<int>(m), n, k, w.weight.raw_data(),
                  scale_ptr, scale_cols, w.block_n, w.block_k, bias_ptr, out.data<float>(), ldo,
                  false};
    const int vec = 16 / static_cast<int>(DTypeSize(dtype));
    args.vectorized = k % vec == 0 && AlignmentOf(args.w) >= 16 && AlignmentOf(args.x) >= 16 &&
                      ldx % 4 == 0 && (scale_ptr == nullptr || w.block_k % vec == 0);
    return LaunchGemv(ctx, args, dtype);
  }
  const Device device = x.device();
  switch (dtype) {
    case DType::kF32:
      return CublasLtLinear(ctx, CUDA_R_32F, x.data<float>(), ldx, w.weight.raw_data(), m, n, k,
                            bias_ptr, out.data<float>(), ldo);
    case DType::kBF16:
    case DType::kF16:
    case DType::kF8E4M3: {
      const bool half = dtype == DType::kF16;
      ASSIGN_OR_RETURN(Tensor xr, Tensor::Empty({m, k}, half ? DType::kF16 : DType::kBF16, device));
      if (half) {
        RoundRowsKernel<__half><<<ElementwiseGrid(m * k), 256, 0, ctx->stream()>>>(
            x.data<float>(), ldx, m, k, static_cast<__half*>(xr.raw_data()));
      } else {
        RoundRowsKernel<__nv_bfloat16><<<ElementwiseGrid(m * k), 256, 0, ctx->stream()>>>(
            x.data<float>(), ldx, m, k, static_cast<__nv_bfloat16*>(xr.raw_data()));
      }
      CUDA_RETURN_IF_LAUNCH_FAILED();
      Tensor wq = w.weight;
      if (dtype == DType::kF8E4M3) {
        ASSIGN_OR_RETURN(wq, Tensor::Empty({n, k}, DType::kBF16, device));
        DequantFp8Kernel<<<ElementwiseGrid(n * k), 256, 0, ctx->stream()>>>(
            static_cast<const __nv_fp8_e4m3*>(w.weight.raw_data()), scale_ptr, scale_cols,
            w.block_n, w.block_k, n, k, static_cast<__nv_bfloat16*>(wq.raw_data()));
        CUDA_RETURN_IF_LAUNCH_FAILED();
      }
      // The scratch tensors go back to the cache when this returns; the next user's work is
      // queued on the same stream behind this GEMM, so the reuse is ordered.
      return CublasLtLinear(ctx, half ? CUDA_R_16F : CUDA_R_16BF, xr.raw_data(), k,
                            wq.raw_data(), m, n, k, bias_ptr, out.data<float>(), ldo);
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Linear: weight dtype ", DTypeName(dtype), " is not supported"));
  }
}

absl::Status LinearGroup(absl::Span<const LinearProblem> problems) {
  static const Tensor kNoBias;
  for (size_t i = 0; i < problems.size(); ++i) {
    const LinearProblem& p = problems[i];
    absl::Status s = cuda::Linear(*p.x, *p.w, p.bias ? *p.bias : kNoBias, *p.out);
    if (!s.ok()) return Annotate(s, absl::StrCat("LinearGroup problem ", i));
  }
  return absl::OkStatus();
}

}  // namespace tessera::cuda
