// CUDA paged attention (kernels/cuda/ops_cuda.h): WriteKvCache and PagedAttention over the
// coordinator-owned block tables, with the semantics of kernels/cpu/attention.h (causal, GQA/MQA,
// sliding window, per-head sinks, strided q / caches / out, the MLA latent cache as two strided
// views of one buffer).
//
// PagedAttentionKernel: one block per (query token, query head, key split). The token finds its
// sequence by binary search in query_start_loc (on the device), loads its query row into shared
// memory, and each warp walks every num_warps-th key of the split with an online softmax: the
// lanes split the dot product over head_dim_k, then each lane accumulates head_dim_v / 32 output
// columns. Warps merge through shared memory. With one split the block applies the sink and writes
// `out`; with several (decode over long contexts, see host/attention_plan.h) it writes its partial
// (max, denominator, accumulator) and MergeSplitsKernel combines them. The same kernel serves
// prefill chunks (every query token is independent); a tiled flash-attention prefill that reads
// each key tile once per query tile is future work.
// Index values (block tables, lengths, query_start_loc, slots) are bound-checked on the device: an
// entry outside the cache is skipped, never dereferenced.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/host/attention_plan.h"
#include "kernels/cuda/host/kernel_math.h"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kMaxDvPerLane = 16;  // head_dim_v <= 512 (the MLA latent rank)
constexpr int kMaxHeadDimV = 32 * kMaxDvPerLane;

struct AttnArgs {
  const float* q;
  int64_t q_s0, q_s1, q_s2;
  const float* k;
  int64_t k_s0, k_s1, k_s2, k_s3;
  const float* v;
  int64_t v_s0, v_s1, v_s2, v_s3;
  const int32_t* block_tables;
  int64_t bt_s0, bt_s1, max_blocks;
  const int32_t* seq_lens;
  int64_t sl_s;
  const int32_t* qsl;
  int64_t qsl_s, num_seqs;
  int64_t num_blocks, block_size;
  int64_t num_heads, group;
  int dk, dv;
  float scale;
  int64_t window;
  const float* sinks;
  int64_t sinks_s;
  float* out;
  int64_t o_s0, o_s1, o_s2;
  float* partial;  // [tokens, heads, splits, dv + 2] when num_splits > 1
  int num_splits;
};

// The sequence of query row t and its position (kernels/cuda/host/kernel_math.h).
__device__ __forceinline__ bool FindSequence(const AttnArgs& a, int64_t t, int64_t* seq,
                                             int64_t* pos) {
  return FindQueryRow(a.qsl, a.qsl_s, a.seq_lens, a.sl_s, a.num_seqs, t, seq, pos);
}

__global__ void PagedAttentionKernel(AttnArgs a) {
  extern __shared__ float smem[];
  const int num_warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int split = blockIdx.z;
  int64_t s, pos;
  if (!FindSequence(a, t, &s, &pos)) return;
  float* q_sh = smem;                       // [dk]
  float* warp_m = q_sh + a.dk;              // [num_warps]
  float* warp_l = warp_m + num_warps;       // [num_warps]
  float* warp_acc = warp_l + num_warps;     // [num_warps, dv]
  for (int d = threadIdx.x; d < a.dk; d += blockDim.x) {
    q_sh[d] = a.q[t * a.q_s0 + h * a.q_s1 + d * a.q_s2];
  }
  __syncthreads();

  int64_t k0, k1;
  SplitKeyRange(pos, a.max_blocks * a.block_size, a.window, a.num_splits, split, &k0, &k1);
  const int64_t g = h / a.group;

  float m = -INFINITY, l = 0.0f;
  float acc[kMaxDvPerLane];
#pragma unroll
  for (int i = 0; i < kMaxDvPerLane; ++i) acc[i] = 0.0f;
  for (int64_t p = k0 + warp; p < k1; p += num_warps) {
    const int64_t block = a.block_tables[s * a.bt_s0 + (p / a.block_size) * a.bt_s1];
    if (block < 0 || block >= a.num_blocks) continue;  // corrupt table entry: skip the key
    const int64_t slot = p % a.block_size;
    const float* kp = a.k + block * a.k_s0 + slot * a.k_s1 + g * a.k_s2;
    float dot = 0.0f;
    for (int d = lane; d < a.dk; d += 32) dot += q_sh[d] * kp[d * a.k_s3];
    const float logit = WarpSum(dot) * a.scale;
    const float m_new = fmaxf(m, logit);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float e = expf(logit - m_new);
    l = l * corr + e;
    const float* vp = a.v + block * a.v_s0 + slot * a.v_s1 + g * a.v_s2;
#pragma unroll
    for (int i = 0; i < kMaxDvPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < a.dv) acc[i] = acc[i] * corr + e * vp[d * a.v_s3];
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kMaxDvPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < a.dv) warp_acc[warp * a.dv + d] = acc[i];
  }
  __syncthreads();

  float mm = -INFINITY;
  for (int w = 0; w < num_warps; ++w) mm = fmaxf(mm, warp_m[w]);
  float ll = 0.0f;
  for (int w = 0; w < num_warps; ++w) {
    if (warp_m[w] != -INFINITY) ll += warp_l[w] * expf(warp_m[w] - mm);
  }
  if (a.num_splits > 1) {
    float* part = a.partial + ((t * a.num_heads + h) * a.num_splits + split) * (a.dv + 2);
    if (threadIdx.x == 0) {
      part[0] = mm;
      part[1] = ll;
    }
    for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
      float sum = 0.0f;
      for (int w = 0; w < num_warps; ++w) {
        if (warp_m[w] != -INFINITY) sum += warp_acc[w * a.dv + d] * expf(warp_m[w] - mm);
      }
      part[2 + d] = sum;
    }
    return;
  }
  float scale_out = 1.0f, denom = ll;
  if (a.sinks != nullptr) {
    const float sink = a.sinks[h * a.sinks_s];
    const float ms = fmaxf(mm, sink);
    scale_out = mm == -INFINITY ? 0.0f : expf(mm - ms);
    denom = ll * scale_out + expf(sink - ms);
  }
  for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < num_warps; ++w) {
      if (warp_m[w] != -INFINITY) sum += warp_acc[w * a.dv + d] * expf(warp_m[w] - mm);
    }
    a.out[t * a.o_s0 + h * a.o_s1 + d * a.o_s2] = sum * scale_out / denom;
  }
}

__global__ void MergeSplitsKernel(AttnArgs a) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  int64_t s, pos;
  if (!FindSequence(a, t, &s, &pos)) return;
  const float* parts = a.partial + (t * a.num_heads + h) * a.num_splits * (a.dv + 2);
  float mm = -INFINITY;
  for (int i = 0; i < a.num_splits; ++i) mm = fmaxf(mm, parts[i * (a.dv + 2)]);
  float ll = 0.0f;
  for (int i = 0; i < a.num_splits; ++i) {
    const float mi = parts[i * (a.dv + 2)];
    if (mi != -INFINITY) ll += parts[i * (a.dv + 2) + 1] * expf(mi - mm);
  }
  float scale_out = 1.0f, denom = ll;
  if (a.sinks != nullptr) {
    const float sink = a.sinks[h * a.sinks_s];
    const float ms = fmaxf(mm, sink);
    scale_out = mm == -INFINITY ? 0.0f : expf(mm - ms);
    denom = ll * scale_out + expf(sink - ms);
  }
  for (int d = threadIdx.x; d < a.dv; d += blockDim.x) {
    float sum = 0.0f;
    for (int i = 0; i < a.num_splits; ++i) {
      const float mi = parts[i * (a.dv + 2)];
      if (mi != -INFINITY) sum += parts[i * (a.dv + 2) + 2 + d] * expf(mi - mm);
    }
    a.out[t * a.o_s0 + h * a.o_s1 + d * a.o_s2] = sum * scale_out / denom;
  }
}

__global__ void WriteCacheKernel(const float* src, int64_t s0, int64_t s1, int64_t s2,
                                 int64_t heads, int64_t dim, const int64_t* slots,
                                 int64_t slot_stride, int64_t num_slots, int64_t block_size,
                                 float* dst, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t * slot_stride];
  if (slot < 0 || slot >= num_slots) return;  // negative: skipped token; too large: corrupt
  const int64_t block = slot / block_size, offset = slot % block_size;
  for (int64_t i = threadIdx.x; i < heads * dim; i += blockDim.x) {
    const int64_t h = i / dim, d = i % dim;
    dst[block * d0 + offset * d1 + h * d2 + d * d3] = src[t * s0 + h * s1 + d * s2];
  }
}

absl::Status CheckTensor(const Tensor& t, absl::string_view name, int ndim, DType dtype) {
  if (!t.defined() || t.ndim() != ndim || t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a ", ndim, "-D ",
                                                   DTypeName(dtype), " tensor, got ",
                                                   t.defined() ? t.DebugString() : "undefined"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache) {
  RETURN_IF_ERROR(CheckTensor(k, "WriteKvCache: k", 3, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(v, "WriteKvCache: v", 3, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(slot_mapping, "WriteKvCache: slot_mapping", 1, DType::kI64));
  RETURN_IF_ERROR(CheckTensor(k_cache, "WriteKvCache: k_cache", 4, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(v_cache, "WriteKvCache: v_cache", 4, DType::kF32));
  const int64_t tokens = k.dim(0);
  if (v.dim(0) != tokens || slot_mapping.dim(0) != tokens || k.dim(1) != k_cache.dim(2) ||
      v.dim(1) != v_cache.dim(2) || k.dim(2) != k_cache.dim(3) || v.dim(2) != v_cache.dim(3) ||
      k_cache.dim(0) != v_cache.dim(0) || k_cache.dim(1) != v_cache.dim(1) ||
      k_cache.dim(1) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WriteKvCache: shapes do not match: k ", k.DebugString(), ", v ", v.DebugString(),
        ", slot_mapping ", slot_mapping.DebugString(), ", k_cache ", k_cache.DebugString(),
        ", v_cache ", v_cache.DebugString()));
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("WriteKvCache", {{"k", &k},
                                               {"v", &v},
                                               {"slot_mapping", &slot_mapping},
                                               {"k_cache", &k_cache},
                                               {"v_cache", &v_cache}}));
  if (tokens == 0) return absl::OkStatus();
  const int64_t num_slots = k_cache.dim(0) * k_cache.dim(1);
  // Keys first, then values in a second launch: where the caches alias (MLA) values land last.
  for (const auto& [src, dst] : {std::pair<const Tensor*, Tensor*>{&k, &k_cache},
                                 std::pair<const Tensor*, Tensor*>{&v, &v_cache}}) {
    const int64_t work = src->dim(1) * src->dim(2);
    if (work == 0) continue;
    const int threads = work >= 256 ? 256 : static_cast<int>((work + 31) / 32 * 32);
    WriteCacheKernel<<<static_cast<unsigned>(tokens), threads, 0, ctx->stream()>>>(
        src->data<float>(), src->stride(0), src->stride(1), src->stride(2), src->dim(1),
        src->dim(2), slot_mapping.data<int64_t>(), slot_mapping.stride(0), num_slots,
        k_cache.dim(1), dst->data<float>(), dst->stride(0), dst->stride(1), dst->stride(2),
        dst->stride(3));
    CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return absl::OkStatus();
}

absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out) {
  RETURN_IF_ERROR(CheckTensor(q, "PagedAttention: q", 3, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(k_cache, "PagedAttention: k_cache", 4, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(v_cache, "PagedAttention: v_cache", 4, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(out, "PagedAttention: out", 3, DType::kF32));
  RETURN_IF_ERROR(CheckTensor(block_tables, "PagedAttention: block_tables", 2, DType::kI32));
  RETURN_IF_ERROR(CheckTensor(seq_lens, "PagedAttention: seq_lens", 1, DType::kI32));
  RETURN_IF_ERROR(CheckTensor(query_start_loc, "PagedAttention: query_start_loc", 1, DType::kI32));
  const int64_t num_tokens = q.dim(0), num_heads = q.dim(1), dk = q.dim(2);
  const int64_t num_kv_heads = k_cache.dim(2), dv = v_cache.dim(3);
  const int64_t num_seqs = seq_lens.dim(0);
  if (k_cache.dim(0) != v_cache.dim(0) || k_cache.dim(1) != v_cache.dim(1) ||
      k_cache.dim(2) != v_cache.dim(2) || k_cache.dim(1) <= 0 || num_kv_heads <= 0 ||
      k_cache.dim(3) != dk || num_heads % num_kv_heads != 0 || out.dim(0) != num_tokens ||
      out.dim(1) != num_heads || out.dim(2) != dv || block_tables.dim(0) != num_seqs ||
      query_start_loc.dim(0) != num_seqs + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PagedAttention: shapes do not match: q ", q.DebugString(), ", k_cache ",
        k_cache.DebugString(), ", v_cache ", v_cache.DebugString(), ", out ", out.DebugString(),
        ", block_tables ", block_tables.DebugString(), ", seq_lens ", seq_lens.DebugString(),
        ", query_start_loc ", query_start_loc.DebugString()));
  }
  if (dv > kMaxHeadDimV) {
    return absl::UnimplementedError(absl::StrCat("PagedAttention: head_dim_v ", dv,
                                                 " exceeds the CUDA kernel's ", kMaxHeadDimV));
  }
  if (params.sinks.defined() &&
      (params.sinks.dtype() != DType::kF32 || params.sinks.ndim() != 1 ||
       params.sinks.dim(0) != num_heads)) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: sinks ",
                                                   params.sinks.DebugString(), " must be f32 [",
                                                   num_heads, "]"));
  }
  if (params.sliding_window < 0 || !std::isfinite(params.scale)) {
    return absl::InvalidArgumentError(
        "PagedAttention: sliding_window must be >= 0 and scale finite");
  }
  ASSIGN_OR_RETURN(DeviceContext * ctx,
                   ContextFor("PagedAttention", {{"q", &q},
                                                 {"k_cache", &k_cache},
                                                 {"v_cache", &v_cache},
                                                 {"block_tables", &block_tables},
                                                 {"seq_lens", &seq_lens},
                                                 {"query_start_loc", &query_start_loc},
                                                 {"sinks", &params.sinks},
                                                 {"out", &out}}));
  if (num_tokens == 0 || num_heads == 0 || num_seqs == 0) return absl::OkStatus();
  const int64_t max_context = block_tables.dim(1) * k_cache.dim(1);
  const AttentionLaunchPlan plan = PlanPagedAttention(
      num_tokens, num_heads, dv,
      params.sliding_window > 0 ? std::min<int64_t>(max_context, params.sliding_window)
                                : max_context,
      ctx->num_multiprocessors());
  AttnArgs a{};
  a.q = q.data<float>();
  a.q_s0 = q.stride(0), a.q_s1 = q.stride(1), a.q_s2 = q.stride(2);
  a.k = k_cache.data<float>();
  a.k_s0 = k_cache.stride(0), a.k_s1 = k_cache.stride(1), a.k_s2 = k_cache.stride(2);
  a.k_s3 = k_cache.stride(3);
  a.v = v_cache.data<float>();
  a.v_s0 = v_cache.stride(0), a.v_s1 = v_cache.stride(1), a.v_s2 = v_cache.stride(2);
  a.v_s3 = v_cache.stride(3);
  a.block_tables = block_tables.data<int32_t>();
  a.bt_s0 = block_tables.stride(0), a.bt_s1 = block_tables.stride(1);
  a.max_blocks = block_tables.dim(1);
  a.seq_lens = seq_lens.data<int32_t>();
  a.sl_s = seq_lens.stride(0);
  a.qsl = query_start_loc.data<int32_t>();
  a.qsl_s = query_start_loc.stride(0);
  a.num_seqs = num_seqs;
  a.num_blocks = k_cache.dim(0), a.block_size = k_cache.dim(1);
  a.num_heads = num_heads, a.group = num_heads / num_kv_heads;
  a.dk = static_cast<int>(dk), a.dv = static_cast<int>(dv);
  a.scale = params.scale;
  a.window = params.sliding_window;
  a.sinks = params.sinks.defined() ? params.sinks.data<float>() : nullptr;
  a.sinks_s = params.sinks.defined() ? params.sinks.stride(0) : 0;
  a.out = out.data<float>();
  a.o_s0 = out.stride(0), a.o_s1 = out.stride(1), a.o_s2 = out.stride(2);
  a.num_splits = plan.num_splits;
  Tensor partial;
  if (plan.num_splits > 1) {
    ASSIGN_OR_RETURN(partial, Tensor::Empty({plan.partial_floats}, DType::kF32, q.device()));
    a.partial = partial.data<float>();
  }
  const int num_warps = plan.threads / 32;
  const size_t smem = sizeof(float) * (dk + 2 * num_warps + num_warps * dv);
  if (smem > 48 * 1024) {
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        PagedAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>(num_heads),
                  static_cast<unsigned>(plan.num_splits));
  PagedAttentionKernel<<<grid, plan.threads, smem, ctx->stream()>>>(a);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  if (plan.num_splits > 1) {
    const dim3 merge_grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>(num_heads));
    MergeSplitsKernel<<<merge_grid, 128, 0, ctx->stream()>>>(a);
    CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return absl::OkStatus();
}

}  // namespace tessera::cuda
