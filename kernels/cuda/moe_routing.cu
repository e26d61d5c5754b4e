// CUDA MoE router (kernels/cuda/ops_cuda.h MoeRoute) with the semantics of
// kernels/cpu/moe_routing.h: softmax then top-k (Mixtral, Qwen-MoE), top-k then softmax
// (gpt-oss), and sigmoid scores selected by score + correction bias with group-limited selection
// (DeepSeek-V3, GLM-4.5, Kimi K2, MiniMax-M2). One block per token; the selection values live in
// shared memory and top-k runs k rounds of a block-wide arg-best under cpu::RanksBefore's order
// (larger first, NaN first, ties to the lower index), so the selected experts and their order
// match the CPU exactly whenever the f32 scores do. No host synchronisation.
#include <climits>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/moe_routing.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kRouteThreads = 128;
constexpr int kMaxTopK = 64;
constexpr int kMaxGroups = 64;

__device__ __forceinline__ bool RanksBeforeDev(float a, int ia, float b, int ib) {
  const bool nan_a = a != a, nan_b = b != b;
  if (nan_a != nan_b) return nan_a;
  if (!nan_a && a != b) return a > b;
  return ia < ib;
}

// The best (value, index) over values[begin, end) not yet taken, across the block; every thread
// gets it. Returns index INT_MAX when nothing is left. Contains __syncthreads().
__device__ int BlockArgBest(const float* values, const unsigned char* taken, int begin, int end,
                            float* red_v, int* red_i) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int e = begin + threadIdx.x; e < end; e += blockDim.x) {
    if (!taken[e] && RanksBeforeDev(values[e], e, bv, bi)) {
      bv = values[e];
      bi = e;
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, offset);
    if (oi != INT_MAX && RanksBeforeDev(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) {
    red_v[warp] = bv;
    red_i[warp] = bi;
  }
  __syncthreads();
  float v = red_v[0];
  int i = red_i[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
    if (red_i[w] != INT_MAX && RanksBeforeDev(red_v[w], red_i[w], v, i)) {
      v = red_v[w];
      i = red_i[w];
    }
  }
  return i;
}

struct RouteArgs {
  const float* logits;
  int64_t logits_stride;
  const float* bias;
  int num_experts;
  int top_k;
  int scoring;  // RouterConfig::Scoring
  bool renormalize;
  int n_group, topk_group;
  float scaling;
  float* weights;
  int64_t weights_stride;
  int32_t* ids;
  int64_t ids_stride;
};

__global__ void __launch_bounds__(kRouteThreads) MoeRouteKernel(RouteArgs a) {
  extern __shared__ float smem[];
  const int E = a.num_experts;
  float* scores = smem;                                               // [E]
  float* choice = scores + E;                                         // [E]
  unsigned char* taken = reinterpret_cast<unsigned char*>(choice + E);  // [E]
  __shared__ float red_v[32];
  __shared__ int red_i[32];
  __shared__ int sel[kMaxTopK];
  __shared__ float group_score[kMaxGroups];
  __shared__ unsigned char group_keep[kMaxGroups];
  __shared__ float scratch[32];
  const float* row = a.logits + blockIdx.x * a.logits_stride;
  const auto kSoftmax = static_cast<int>(RouterConfig::Scoring::kSoftmax);
  const auto kSoftmaxTopK = static_cast<int>(RouterConfig::Scoring::kSoftmaxTopK);

  for (int e = threadIdx.x; e < E; e += blockDim.x) taken[e] = 0;
  if (a.scoring == kSoftmax) {
    float mx = -INFINITY;
    for (int e = threadIdx.x; e < E; e += blockDim.x) mx = fmaxf(mx, row[e]);
    mx = BlockMax(mx, scratch);
    float sum = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      const float v = expf(row[e] - mx);
      scores[e] = v;
      sum += v;
    }
    sum = BlockSum(sum, scratch);
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      scores[e] /= sum;
      choice[e] = scores[e];
    }
  } else if (a.scoring == kSoftmaxTopK) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) scores[e] = choice[e] = row[e];
  } else {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      const float s = 1.0f / (1.0f + expf(-row[e]));
      scores[e] = s;
      choice[e] = a.bias != nullptr ? s + a.bias[e] : s;
    }
  }
  __syncthreads();

  if (a.scoring != kSoftmax && a.scoring != kSoftmaxTopK && a.n_group > 1) {
    const int per = E / a.n_group;
    // Group score: sum of its top-2 choice values (its only value with one expert per group).
    for (int g = threadIdx.x; g < a.n_group; g += blockDim.x) {
      const float* c = choice + g * per;
      float b1 = -INFINITY, b2 = -INFINITY;
      int i1 = INT_MAX, i2 = INT_MAX;
      for (int e = 0; e < per; ++e) {
        if (RanksBeforeDev(c[e], e, b1, i1)) {
          b2 = b1, i2 = i1;
          b1 = c[e], i1 = e;
        } else if (RanksBeforeDev(c[e], e, b2, i2)) {
          b2 = c[e], i2 = e;
        }
      }
      group_score[g] = per >= 2 ? b1 + b2 : b1;
      group_keep[g] = 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int r = 0; r < a.topk_group; ++r) {
        int best = -1;
        for (int g = 0; g < a.n_group; ++g) {
          if (!group_keep[g] && (best < 0 || RanksBeforeDev(group_score[g], g, group_score[best], best))) {
            best = g;
          }
        }
        group_keep[best] = 1;
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      if (!group_keep[e / per]) choice[e] = 0.0f;
    }
    __syncthreads();
  }

  for (int j = 0; j < a.top_k; ++j) {
    const int best = BlockArgBest(choice, taken, 0, E, red_v, red_i);
    if (threadIdx.x == 0) {
      sel[j] = best;
      taken[best] = 1;
    }
    __syncthreads();
  }

  if (threadIdx.x == 0) {
    float w[kMaxTopK];
    const int k = a.top_k;
    if (a.scoring == kSoftmaxTopK) {
      const float mx = scores[sel[0]];
      float sum = 0.0f;
      for (int j = 0; j < k; ++j) sum += (w[j] = expf(scores[sel[j]] - mx));
      for (int j = 0; j < k; ++j) w[j] /= sum;
    } else {
      for (int j = 0; j < k; ++j) w[j] = scores[sel[j]];
      if (a.renormalize) {
        float total = 0.0f;
        for (int j = 0; j < k; ++j) total += w[j];
        if (a.scoring != kSoftmax) total += 1e-20f;
        for (int j = 0; j < k; ++j) w[j] /= total;
      }
    }
    float* wo = a.weights + blockIdx.x * a.weights_stride;
    int32_t* io = a.ids + blockIdx.x * a.ids_stride;
    for (int j = 0; j < k; ++j) {
      wo[j] = w[j] * a.scaling;
      io[j] = sel[j];
    }
  }
}

}  // namespace

absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids) {
  RETURN_IF_ERROR(
      cpu::ValidateMoeRoute(logits, correction_bias, config, topk_weights, topk_ids, false));
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("MoeRoute", {{"logits", &logits},
                                                                {"correction_bias", &correction_bias},
                                                                {"topk_weights", &topk_weights},
                                                                {"topk_ids", &topk_ids}}));
  if (config.top_k > kMaxTopK || config.n_group > kMaxGroups) {
    return absl::UnimplementedError(absl::StrCat("MoeRoute on CUDA supports top_k <= ", kMaxTopK,
                                                 " and n_group <= ", kMaxGroups, ", got ",
                                                 config.top_k, " and ", config.n_group));
  }
  if ((logits.dim(1) > 1 && logits.stride(1) != 1) ||
      (config.top_k > 1 && (topk_weights.stride(1) != 1 || topk_ids.stride(1) != 1))) {
    return absl::InvalidArgumentError("MoeRoute: rows of logits and outputs must be contiguous");
  }
  const int64_t num_tokens = logits.dim(0);
  if (num_tokens == 0) return absl::OkStatus();
  RouteArgs a{};
  a.logits = logits.data<float>();
  a.logits_stride = logits.stride(0);
  a.bias = correction_bias.defined() ? correction_bias.data<float>() : nullptr;
  a.num_experts = static_cast<int>(logits.dim(1));
  a.top_k = config.top_k;
  a.scoring = static_cast<int>(config.scoring);
  a.renormalize = config.renormalize;
  a.n_group = config.n_group;
  a.topk_group = config.topk_group;
  a.scaling = config.routed_scaling_factor;
  a.weights = topk_weights.data<float>();
  a.weights_stride = topk_weights.stride(0);
  a.ids = topk_ids.data<int32_t>();
  a.ids_stride = topk_ids.stride(0);
  const size_t smem = static_cast<size_t>(a.num_experts) * (2 * sizeof(float) + 1);
  if (smem > 48 * 1024) {
    return absl::UnimplementedError(absl::StrCat("MoeRoute on CUDA: ", a.num_experts,
                                                 " experts exceed the shared-memory budget"));
  }
  MoeRouteKernel<<<static_cast<unsigned>(num_tokens), kRouteThreads, smem, ctx->stream()>>>(a);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace tessera::cuda
