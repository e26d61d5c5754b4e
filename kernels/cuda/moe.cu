// CUDA MoE expert computation without host synchronisation (kernels/cuda/ops_cuda.h):
// MoePermute groups the (token, slot) pairs of MoeRoute's topk_ids by expert on the device,
// MoeExpertLinear runs every expert's projection over its rows in one launch (segment offsets read
// on the device: experts without rows exit at once), MoeUnpermute sums each token's expert outputs
// weighted by topk_weights.
//
// MoePermute: one block; a histogram of expert ids (shared-memory atomics), an exclusive scan, then
// each slot takes the next position of its expert (atomics, so the order inside an expert is
// arbitrary; every row is computed independently and MoeUnpermute adds a token's slots in slot
// order, so the results do not depend on it). Ids outside [0, num_experts) are dropped (their
// slot position is -1 and contributes nothing).
// MoeExpertLinear: the experts' pointer table is uploaded once per weight set and cached (so
// after a first call the op is CUDA-graph capturable); grid (expert, tile of 8 output features); each warp owns one feature and walks
// its expert's rows 8 at a time, dequantising the weight row in registers (f32, bf16, f16, fp8 e4m3
// with block scales) -- the GEMV path of Linear per expert. Decode-sized segments read each
// expert weight once; large prefill segments re-read it per 8 rows (correct, not yet fast: a
// grouped tensor-core GEMM over device-resident segment sizes is the performance path to write).
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kPermuteThreads = 1024;
constexpr int kMaxExperts = 4096;
constexpr int kSegWarps = 8;
constexpr int kSegRows = 8;

__global__ void __launch_bounds__(kPermuteThreads)
    PermuteKernel(const int32_t* ids, int64_t num_slots, int num_experts, int32_t* offsets,
                  int32_t* rows, int32_t* slot_pos) {
  __shared__ int counts[kMaxExperts];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < num_slots; i += blockDim.x) {
    const int e = ids[i];
    if (e >= 0 && e < num_experts) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int e = 0; e < num_experts; ++e) {
      const int c = counts[e];
      offsets[e] = run;
      counts[e] = run;  // becomes the cursor
      run += c;
    }
    offsets[num_experts] = run;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < num_slots; i += blockDim.x) {
    const int e = ids[i];
    if (e >= 0 && e < num_experts) {
      const int pos = atomicAdd(&counts[e], 1);
      rows[pos] = static_cast<int32_t>(i);
      slot_pos[i] = pos;
    } else {
      slot_pos[i] = -1;
    }
  }
}

struct ExpertWeight {
  const void* w;
  const float* scale_inv;
  const float* bias;
};

struct SegArgs {
  const float* x;
  int64_t ldx;
  bool gather;  // row p reads x[rows[p] / top_k]; otherwise x[p]
  int top_k;
  const int32_t* rows;
  const int32_t* offsets;
  const ExpertWeight* experts;
  int64_t n, k, scale_cols;
  int block_n, block_k;
  float* out;
  int64_t ldo;
};

template <typename W>
__global__ void __launch_bounds__(kSegWarps * 32) SegmentLinearKernel(SegArgs a) {
  const int e = blockIdx.x;
  const int begin = a.offsets[e], end = a.offsets[e + 1];
  if (begin >= end) return;
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kSegWarps + (threadIdx.x >> 5);
  if (j >= a.n) return;
  const ExpertWeight ew = a.experts[e];
  const W* wrow = static_cast<const W*>(ew.w) + j * a.k;
  const float* srow = ew.scale_inv ? ew.scale_inv + (j / a.block_n) * a.scale_cols : nullptr;
  const float b = ew.bias ? ew.bias[j] : 0.0f;
  for (int r0 = begin; r0 < end; r0 += kSegRows) {
    const float* xr[kSegRows];
    float acc[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      acc[r] = 0.0f;
      const int p = min(r0 + r, end - 1);
      const int64_t src = a.gather ? a.rows[p] / a.top_k : p;
      xr[r] = a.x + src * a.ldx;
    }
    for (int64_t kk = lane; kk < a.k; kk += 32) {
      float wf = ToFloat(wrow[kk]);
      if (srow) wf *= srow[kk / a.block_k];
#pragma unroll
      for (int r = 0; r < kSegRows; ++r) acc[r] += wf * xr[r][kk];
    }
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const float s = WarpSum(acc[r]);
      if (lane == 0 && r0 + r < end) a.out[static_cast<int64_t>(r0 + r) * a.ldo + j] = s + b;
    }
  }
}

__global__ void UnpermuteKernel(const float* expert_out, int64_t ld_in, const int32_t* slot_pos,
                                const float* weights, int64_t w_stride, int top_k, int64_t hidden,
                                float* out, int64_t ld_out) {
  const int64_t t = blockIdx.x;
  float* o = out + t * ld_out;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float sum = 0.0f;
    for (int j = 0; j < top_k; ++j) {
      const int pos = slot_pos[t * top_k + j];
      if (pos >= 0) sum += weights[t * w_stride + j] * expert_out[pos * ld_in + c];
    }
    o[c] = sum;
  }
}

// The device copy of an expert pointer table, uploaded once per distinct table: the key is the
// table's content (every pointer), so a cached copy is always exact, and later calls (including
// ones inside a CUDA graph capture) enqueue no host-to-device copy.
absl::StatusOr<Tensor> ExpertTable(DeviceContext* ctx, Device device,
                                   const std::vector<ExpertWeight>& host) {
  static std::mutex mutex;
  static auto* cache = new std::map<std::pair<int, std::vector<const void*>>, Tensor>();
  std::vector<const void*> key;
  key.reserve(3 * host.size());
  for (const ExpertWeight& e : host) {
    key.push_back(e.w);
    key.push_back(e.scale_inv);
    key.push_back(e.bias);
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache->find({device.index, key});
  if (it != cache->end()) return it->second;
  const size_t bytes = sizeof(ExpertWeight) * host.size();
  ASSIGN_OR_RETURN(Tensor table,
                   Tensor::Empty({static_cast<int64_t>(bytes)}, DType::kU8, device));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(table.raw_data(), host.data(), bytes,
                                       cudaMemcpyHostToDevice, ctx->stream()));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx->stream()));  // `host` is pageable and local
  (*cache)[{device.index, std::move(key)}] = table;
  return table;
}

absl::Status Check2d(const Tensor& t, absl::string_view name, DType dtype) {
  if (!t.defined() || t.ndim() != 2 || t.dtype() != dtype ||
      (t.dim(1) > 1 && t.stride(1) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a 2-D ", DTypeName(dtype),
                                                   " tensor with contiguous rows, got ",
                                                   t.defined() ? t.DebugString() : "undefined"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MoePermutation> MoePermute(const Tensor& topk_ids, int num_experts) {
  RETURN_IF_ERROR(Check2d(topk_ids, "MoePermute: topk_ids", DType::kI32));
  if (!topk_ids.is_contiguous()) {
    return absl::InvalidArgumentError("MoePermute: topk_ids must be contiguous");
  }
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrCat("MoePermute: num_experts ", num_experts,
                                                   " must be in [1, ", kMaxExperts, "]"));
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("MoePermute", {{"topk_ids", &topk_ids}}));
  const int64_t slots = topk_ids.numel();
  MoePermutation perm;
  perm.top_k = static_cast<int>(topk_ids.dim(1));
  perm.num_experts = num_experts;
  ASSIGN_OR_RETURN(perm.expert_offsets,
                   Tensor::Empty({num_experts + 1}, DType::kI32, topk_ids.device()));
  ASSIGN_OR_RETURN(perm.rows, Tensor::Empty({std::max<int64_t>(1, slots)}, DType::kI32,
                                            topk_ids.device()));
  ASSIGN_OR_RETURN(perm.slot_pos, Tensor::Empty({std::max<int64_t>(1, slots)}, DType::kI32,
                                                topk_ids.device()));
  PermuteKernel<<<1, kPermuteThreads, 0, ctx->stream()>>>(
      topk_ids.data<int32_t>(), slots, num_experts, perm.expert_offsets.data<int32_t>(),
      perm.rows.data<int32_t>(), perm.slot_pos.data<int32_t>());
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return perm;
}

absl::Status MoeExpertLinear(const Tensor& x, bool gather_from_tokens,
                             const MoePermutation& perm, absl::Span<const LinearWeight> experts,
                             absl::Span<const Tensor> biases, Tensor& out) {
  RETURN_IF_ERROR(Check2d(x, "MoeExpertLinear: x", DType::kF32));
  RETURN_IF_ERROR(Check2d(out, "MoeExpertLinear: out", DType::kF32));
  if (static_cast<int>(experts.size()) != perm.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("MoeExpertLinear: ", experts.size(),
                                                   " expert weights for ", perm.num_experts,
                                                   " experts"));
  }
  if (!biases.empty() && biases.size() != experts.size()) {
    return absl::InvalidArgumentError("MoeExpertLinear: biases must be empty or one per expert");
  }
  const LinearWeight& w0 = experts[0];
  for (const LinearWeight& w : experts) {
    if (w.is_mxfp4()) {
      return absl::UnimplementedError(
          "MoeExpertLinear: MXFP4 weights have no CUDA kernel yet (CPU workers run them)");
    }
  }
  const DType dtype = w0.weight.dtype();
  const int64_t n = w0.out_features(), k = w0.in_features();
  const int64_t scale_cols = w0.scale_inv.defined() ? w0.scale_inv.dim(1) : 0;
  std::vector<ExpertWeight> host(experts.size());
  for (size_t e = 0; e < experts.size(); ++e) {
    const LinearWeight& w = experts[e];
    if (!w.weight.defined() || w.weight.dtype() != dtype || w.weight.ndim() != 2 ||
        w.out_features() != n || w.in_features() != k || !w.weight.is_contiguous() ||
        w.scale_inv.defined() != w0.scale_inv.defined() || w.block_n != w0.block_n ||
        w.block_k != w0.block_k ||
        (w.scale_inv.defined() &&
         (w.scale_inv.dim(0) != (n + w.block_n - 1) / w.block_n ||
          w.scale_inv.dim(1) != scale_cols || !w.scale_inv.is_contiguous()))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MoeExpertLinear: expert ", e, " weight ", w.weight.DebugString(),
          " differs from expert 0 ", w0.weight.DebugString(), " (dtype, shape or block scales)"));
    }
    const Tensor* bias = biases.empty() ? nullptr : &biases[e];
    if (bias != nullptr && bias->defined() &&
        (bias->dtype() != DType::kF32 || bias->numel() != n || !bias->is_contiguous())) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoeExpertLinear: bias of expert ", e, " must be contiguous f32 [", n, "]"));
    }
    RETURN_IF_ERROR(ContextFor("MoeExpertLinear", {{"x", &x},
                                                   {"weight", &w.weight},
                                                   {"scale_inv", &w.scale_inv},
                                                   {"bias", bias},
                                                   {"out", &out}})
                        .status());
    host[e] = ExpertWeight{w.weight.raw_data(),
                           w.scale_inv.defined() ? w.scale_inv.data<float>() : nullptr,
                           bias != nullptr && bias->defined() ? bias->data<float>() : nullptr};
  }
  if (x.dim(1) != k || out.dim(1) != n || out.dim(0) != perm.slot_pos.numel() ||
      (!gather_from_tokens && x.dim(0) != out.dim(0))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoeExpertLinear: x ", x.DebugString(), " / out ", out.DebugString(),
        " do not match weights [", n, ", ", k, "] and ", perm.slot_pos.numel(), " slots"));
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("MoeExpertLinear", {{"x", &x}, {"out", &out}}));
  ASSIGN_OR_RETURN(Tensor table, ExpertTable(ctx, x.device(), host));
  SegArgs a{};
  a.x = x.data<float>();
  a.ldx = x.dim(0) > 1 ? x.stride(0) : k;
  a.gather = gather_from_tokens;
  a.top_k = perm.top_k;
  a.rows = perm.rows.data<int32_t>();
  a.offsets = perm.expert_offsets.data<int32_t>();
  a.experts = static_cast<const ExpertWeight*>(table.raw_data());
  a.n = n, a.k = k, a.scale_cols = scale_cols;
  a.block_n = w0.block_n, a.block_k = w0.block_k;
  a.out = out.data<float>();
  a.ldo = out.dim(0) > 1 ? out.stride(0) : n;
  const dim3 grid(static_cast<unsigned>(perm.num_experts), GridFor(n, kSegWarps));
  const int threads = kSegWarps * 32;
  switch (dtype) {
    case DType::kF32: SegmentLinearKernel<float><<<grid, threads, 0, ctx->stream()>>>(a); break;
    case DType::kBF16:
      SegmentLinearKernel<__nv_bfloat16><<<grid, threads, 0, ctx->stream()>>>(a);
      break;
    case DType::kF16: SegmentLinearKernel<__half><<<grid, threads, 0, ctx->stream()>>>(a); break;
    case DType::kF8E4M3:
      SegmentLinearKernel<__nv_fp8_e4m3><<<grid, threads, 0, ctx->stream()>>>(a);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("MoeExpertLinear: weight dtype ", DTypeName(dtype), " is not supported"));
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status MoeUnpermute(const Tensor& expert_out, const MoePermutation& perm,
                          const Tensor& topk_weights, Tensor& out) {
  RETURN_IF_ERROR(Check2d(expert_out, "MoeUnpermute: expert_out", DType::kF32));
  RETURN_IF_ERROR(Check2d(topk_weights, "MoeUnpermute: topk_weights", DType::kF32));
  RETURN_IF_ERROR(Check2d(out, "MoeUnpermute: out", DType::kF32));
  const int64_t tokens = out.dim(0), hidden = out.dim(1);
  if (topk_weights.dim(0) != tokens || topk_weights.dim(1) != perm.top_k ||
      expert_out.dim(1) != hidden || expert_out.dim(0) != tokens * perm.top_k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoeUnpermute: expert_out ", expert_out.DebugString(), ", topk_weights ",
        topk_weights.DebugString(), " and out ", out.DebugString(), " disagree (top_k ",
        perm.top_k, ")"));
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("MoeUnpermute", {{"expert_out", &expert_out},
                                               {"topk_weights", &topk_weights},
                                               {"out", &out}}));
  if (tokens == 0 || hidden == 0) return absl::OkStatus();
  const int threads = hidden >= 256 ? 256 : static_cast<int>((hidden + 31) / 32 * 32);
  UnpermuteKernel<<<static_cast<unsigned>(tokens), threads, 0, ctx->stream()>>>(
      expert_out.data<float>(), expert_out.dim(0) > 1 ? expert_out.stride(0) : hidden,
      perm.slot_pos.data<int32_t>(), topk_weights.data<float>(), topk_weights.stride(0),
      perm.top_k, hidden, out.data<float>(), tokens > 1 ? out.stride(0) : hidden);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace tessera::cuda
