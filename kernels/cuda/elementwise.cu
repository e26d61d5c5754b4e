// CUDA normalisation, elementwise operations and RoPE (kernels/cuda/ops_cuda.h), with the
// numerics of kernels/cpu/elementwise.h and kernels/cpu/rope.h:
// - RmsNorm / AddRmsNorm: one block per row; out = (x * (1 / sqrt(mean(x^2) + eps))) * weight.
// - SiluAndMul: g / (1 + exp(-g)) * up; ClampedSwiGlu: gate = min(gate, limit),
//   up = clamp(up, -limit, limit), (up + 1) * gate * sigmoid(alpha * gate) (std::min/clamp's NaN
//   behaviour kept).
// - Softmax: one block per row, max-subtracted (an all -inf row gives NaN like torch).
// - Embedding: one block per token, rows outside the shard or the vocabulary are zero.
// - ApplyRope: one thread per rotated pair, tables from the RopeCache (already scaled).
// Row-wise operations take any tensor whose last dimension is contiguous (up to 4 leading
// dimensions with arbitrary strides), like the CPU kernels.
#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kMaxLead = 4;
constexpr int kRowThreads = 256;

// Rows of a tensor whose last dimension is contiguous, addressable on the device.
struct DeviceRows {
  float* base = nullptr;
  int64_t num_rows = 0;
  int64_t row_size = 0;
  int num_lead = 0;
  int64_t sizes[kMaxLead] = {};
  int64_t strides[kMaxLead] = {};

  __device__ __forceinline__ float* Row(int64_t r) const {
    // Unrolled with constant indices so the arrays stay in registers (no local memory).
    int64_t offset = 0;
#pragma unroll
    for (int d = kMaxLead - 1; d >= 0; --d) {
      if (d < num_lead) {
        offset += (r % sizes[d]) * strides[d];
        r /= sizes[d];
      }
    }
    return base + offset;
  }
};

absl::StatusOr<DeviceRows> RowsOf(const Tensor& t, absl::string_view name) {
  if (!t.defined() || t.ndim() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a defined tensor of rank >= 1"));
  }
  if (t.ndim() - 1 > kMaxLead) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " ", t.DebugString(), ": the CUDA kernels take at most ", kMaxLead + 1, " dims"));
  }
  DeviceRows rows;
  rows.base = static_cast<float*>(t.raw_data());
  rows.row_size = t.dim(-1);
  rows.num_lead = t.ndim() - 1;
  rows.num_rows = 1;
  for (int d = 0; d < rows.num_lead; ++d) {
    rows.sizes[d] = t.dim(d);
    rows.strides[d] = t.stride(d);
    rows.num_rows *= t.dim(d);
  }
  if (rows.num_lead == 0) {
    rows.num_lead = 1;
    rows.sizes[0] = 1;
    rows.strides[0] = 0;
  }
  return rows;
}

unsigned RowGrid(int64_t rows) { return static_cast<unsigned>(rows); }

__global__ void RmsNormKernel(DeviceRows x, const float* __restrict__ w, float eps,
                              DeviceRows out) {
  __shared__ float scratch[32];
  const float* xr = x.Row(blockIdx.x);
  float* orow = out.Row(blockIdx.x);
  const int64_t h = x.row_size;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) ss += xr[i] * xr[i];
  ss = BlockSum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) orow[i] = (xr[i] * inv) * w[i];
}

__global__ void AddRmsNormKernel(DeviceRows residual, DeviceRows delta,
                                 const float* __restrict__ w, float eps, DeviceRows out) {
  __shared__ float scratch[32];
  float* rr = residual.Row(blockIdx.x);
  const float* dr = delta.Row(blockIdx.x);
  float* orow = out.Row(blockIdx.x);
  const int64_t h = residual.row_size;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float v = rr[i] + dr[i];
    rr[i] = v;
    ss += v * v;
  }
  ss = BlockSum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
  // Each thread reads back only the elements it wrote, so out may alias residual or delta.
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) orow[i] = (rr[i] * inv) * w[i];
}

__global__ void SiluAndMulKernel(DeviceRows gate_up, DeviceRows out) {
  const float* g = gate_up.Row(blockIdx.x);
  float* o = out.Row(blockIdx.x);
  const int64_t inter = out.row_size;
  for (int64_t i = threadIdx.x; i < inter; i += blockDim.x) {
    const float gv = g[i];
    o[i] = gv / (1.0f + expf(-gv)) * g[inter + i];
  }
}

__global__ void ClampedSwiGluKernel(DeviceRows gate_up, float alpha, float limit, DeviceRows out) {
  const float* in = gate_up.Row(blockIdx.x);
  float* o = out.Row(blockIdx.x);
  const int64_t inter = out.row_size;
  for (int64_t i = threadIdx.x; i < inter; i += blockDim.x) {
    const float g0 = in[2 * i], u0 = in[2 * i + 1];
    const float gate = limit < g0 ? limit : g0;                              // std::min
    const float up = u0 < -limit ? -limit : (limit < u0 ? limit : u0);       // std::clamp
    const float glu = gate * (1.0f / (1.0f + expf(-(gate * alpha))));
    o[i] = (up + 1.0f) * glu;
  }
}

__global__ void SoftmaxKernel(DeviceRows x) {
  __shared__ float scratch[32];
  float* row = x.Row(blockIdx.x);
  const int64_t n = x.row_size;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, row[i]);
  mx = BlockMax(mx, scratch);
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(row[i] - mx);
    row[i] = e;
    sum += e;
  }
  sum = BlockSum(sum, scratch);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] /= sum;
}

template <typename T>
__global__ void EmbeddingKernel(const T* __restrict__ table, int64_t rows, int64_t table_stride,
                                int64_t hidden,
                                const int32_t* __restrict__ ids, int64_t ids_stride,
                                int64_t vocab_start, int64_t vocab_size, float* out,
                                int64_t out_stride) {
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t * ids_stride];
  const int64_t local = id - vocab_start;
  const bool valid = local >= 0 && local < rows && (vocab_size <= 0 || (id >= 0 && id < vocab_size));
  float* o = out + t * out_stride;
  const T* src = table + (valid ? local : 0) * table_stride;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    o[i] = valid ? ToFloat(src[i]) : 0.0f;
  }
}

__global__ void AxpyKernel(float scale, DeviceRows x, DeviceRows out) {
  const float* xr = x.Row(blockIdx.x);
  float* o = out.Row(blockIdx.x);
  for (int64_t i = threadIdx.x; i < out.row_size; i += blockDim.x) o[i] += scale * xr[i];
}

template <typename P>
__global__ void RopeKernel(const float* __restrict__ cos, const float* __restrict__ sin,
                           int64_t half, int64_t max_position, const P* __restrict__ positions,
                           int64_t pos_stride, float* x, int64_t num_heads, int64_t token_stride,
                           int64_t head_stride, bool neox) {
  const int64_t t = blockIdx.x;
  const int64_t p = static_cast<int64_t>(positions[t * pos_stride]);
  if (p < 0 || p >= max_position) return;  // out of range: leave the token unrotated
  const float* c = cos + p * half;
  const float* s = sin + p * half;
  for (int64_t idx = threadIdx.x; idx < num_heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    float* v = x + t * token_stride + h * head_stride;
    const int64_t i1 = neox ? i : 2 * i, i2 = neox ? i + half : 2 * i + 1;
    const float a = v[i1], b = v[i2];
    v[i1] = a * c[i] - b * s[i];
    v[i2] = b * c[i] + a * s[i];
  }
}

int ThreadsFor(int64_t row_size) {
  return row_size >= kRowThreads ? kRowThreads
                                 : static_cast<int>(std::max<int64_t>(32, (row_size + 31) / 32 * 32));
}

}  // namespace

absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateRmsNorm(x, weight, out, /*host_only=*/false));
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("RmsNorm", {{"x", &x}, {"weight", &weight}, {"out", &out}}));
  ASSIGN_OR_RETURN(DeviceRows xr, RowsOf(x, "x"));
  ASSIGN_OR_RETURN(DeviceRows orow, RowsOf(out, "out"));
  if (xr.num_rows == 0 || xr.row_size == 0) return absl::OkStatus();
  RmsNormKernel<<<RowGrid(xr.num_rows), kRowThreads, 0, ctx->stream()>>>(
      xr, weight.data<float>(), eps, orow);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateAddRmsNorm(residual, delta, weight, out, /*host_only=*/false));
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("AddRmsNorm", {{"residual", &residual},
                                             {"delta", &delta},
                                             {"weight", &weight},
                                             {"out", &out}}));
  ASSIGN_OR_RETURN(DeviceRows rr, RowsOf(residual, "residual"));
  ASSIGN_OR_RETURN(DeviceRows dr, RowsOf(delta, "delta"));
  ASSIGN_OR_RETURN(DeviceRows orow, RowsOf(out, "out"));
  if (rr.num_rows == 0 || rr.row_size == 0) return absl::OkStatus();
  AddRmsNormKernel<<<RowGrid(rr.num_rows), kRowThreads, 0, ctx->stream()>>>(
      rr, dr, weight.data<float>(), eps, orow);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateGatedActivation("SiluAndMul", gate_up, out, false));
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("SiluAndMul", {{"gate_up", &gate_up}, {"out", &out}}));
  ASSIGN_OR_RETURN(DeviceRows g, RowsOf(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(DeviceRows o, RowsOf(out, "out"));
  if (o.num_rows == 0 || o.row_size == 0) return absl::OkStatus();
  SiluAndMulKernel<<<RowGrid(o.num_rows), ThreadsFor(o.row_size), 0, ctx->stream()>>>(g, o);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateGatedActivation("ClampedSwiGlu", gate_up, out, false));
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("ClampedSwiGlu", {{"gate_up", &gate_up}, {"out", &out}}));
  ASSIGN_OR_RETURN(DeviceRows g, RowsOf(gate_up, "gate_up"));
  ASSIGN_OR_RETURN(DeviceRows o, RowsOf(out, "out"));
  if (o.num_rows == 0 || o.row_size == 0) return absl::OkStatus();
  ClampedSwiGluKernel<<<RowGrid(o.num_rows), ThreadsFor(o.row_size), 0, ctx->stream()>>>(
      g, alpha, limit, o);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status Softmax(Tensor& x) {
  RETURN_IF_ERROR(cpu::ValidateSoftmax(x, /*host_only=*/false));
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("Softmax", {{"x", &x}}));
  ASSIGN_OR_RETURN(DeviceRows xr, RowsOf(x, "x"));
  if (xr.num_rows == 0 || xr.row_size == 0) return absl::OkStatus();
  SoftmaxKernel<<<RowGrid(xr.num_rows), kRowThreads, 0, ctx->stream()>>>(xr);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateEmbedding(table, ids, vocab_start, vocab_size, out, false));
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("Embedding", {{"table", &table}, {"ids", &ids}, {"out", &out}}));
  const int64_t num_tokens = ids.dim(0), rows = table.dim(0), hidden = table.dim(1);
  if (num_tokens == 0 || hidden == 0) return absl::OkStatus();
  const int64_t ids_stride = ids.stride(0), out_stride = out.stride(0);
  const int64_t table_stride = table.stride(0);
  const int threads = ThreadsFor(hidden);
  switch (table.dtype()) {
    case DType::kF32:
      EmbeddingKernel<float><<<num_tokens, threads, 0, ctx->stream()>>>(
          table.data<float>(), rows, table_stride, hidden, ids.data<int32_t>(), ids_stride, vocab_start,
          vocab_size, out.data<float>(), out_stride);
      break;
    case DType::kBF16:
      EmbeddingKernel<__nv_bfloat16><<<num_tokens, threads, 0, ctx->stream()>>>(
          static_cast<const __nv_bfloat16*>(table.raw_data()), rows, table_stride, hidden, ids.data<int32_t>(),
          ids_stride, vocab_start, vocab_size, out.data<float>(), out_stride);
      break;
    case DType::kF16:
      EmbeddingKernel<__half><<<num_tokens, threads, 0, ctx->stream()>>>(
          static_cast<const __half*>(table.raw_data()), rows, table_stride, hidden, ids.data<int32_t>(),
          ids_stride, vocab_start, vocab_size, out.data<float>(), out_stride);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("Embedding: table dtype ",
                                                     DTypeName(table.dtype()),
                                                     " is not supported (f32, bf16, f16)"));
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status Axpy(float scale, const Tensor& x, Tensor& out) {
  RETURN_IF_ERROR(cpu::ValidateAxpy(x, out, /*host_only=*/false));
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("Axpy", {{"x", &x}, {"out", &out}}));
  ASSIGN_OR_RETURN(DeviceRows xr, RowsOf(x, "x"));
  ASSIGN_OR_RETURN(DeviceRows o, RowsOf(out, "out"));
  if (o.num_rows == 0 || o.row_size == 0) return absl::OkStatus();
  AxpyKernel<<<RowGrid(o.num_rows), ThreadsFor(o.row_size), 0, ctx->stream()>>>(scale, xr, o);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status ApplyRope(const RopeConfig& config, const Tensor& cos, const Tensor& sin,
                       const Tensor& positions, Tensor& x) {
  if (!x.defined() || x.dtype() != DType::kF32 || x.ndim() != 3 || x.dim(2) != config.head_dim ||
      (x.dim(2) > 1 && x.stride(2) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ApplyRope: x must be [num_tokens, num_heads, head_dim = ", config.head_dim,
        "] f32 with contiguous head rows, got ", x.DebugString()));
  }
  if (!positions.defined() || positions.ndim() != 1 || positions.dim(0) != x.dim(0) ||
      (positions.dtype() != DType::kI32 && positions.dtype() != DType::kI64)) {
    return absl::InvalidArgumentError(absl::StrCat("ApplyRope: positions must be [", x.dim(0),
                                                   "] i32 or i64, got ", positions.DebugString()));
  }
  const int64_t half = cpu::RotaryDim(config) / 2;
  if (!cos.defined() || !sin.defined() || cos.dtype() != DType::kF32 || cos.ndim() != 2 ||
      cos.dim(0) != config.max_position || cos.dim(1) != half || !cos.is_contiguous() ||
      !sin.is_contiguous() || sin.shape() != cos.shape()) {
    return absl::InvalidArgumentError("ApplyRope: cos/sin tables do not match the RopeConfig");
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("ApplyRope",
                              {{"x", &x}, {"positions", &positions}, {"cos", &cos}, {"sin", &sin}}));
  const int64_t num_tokens = x.dim(0), num_heads = x.dim(1);
  if (half == 0 || num_tokens == 0 || num_heads == 0) return absl::OkStatus();
  const int threads = ThreadsFor(num_heads * half);
  if (positions.dtype() == DType::kI32) {
    RopeKernel<int32_t><<<num_tokens, threads, 0, ctx->stream()>>>(
        cos.data<float>(), sin.data<float>(), half, config.max_position,
        positions.data<int32_t>(), positions.stride(0), x.data<float>(), num_heads, x.stride(0),
        x.stride(1), config.neox_style);
  } else {
    RopeKernel<int64_t><<<num_tokens, threads, 0, ctx->stream()>>>(
        cos.data<float>(), sin.data<float>(), half, config.max_position,
        positions.data<int64_t>(), positions.stride(0), x.data<float>(), num_heads, x.stride(0),
        x.stride(1), config.neox_style);
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace tessera::cuda
