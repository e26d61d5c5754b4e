// CUDA sampling (kernels/cuda/ops_cuda.h SampleRows): one block per request row, following the
// contract of kernels/cpu/sampling.h step by step, so that only token ids and raw logprobs travel
// back to the host.
//
//  1. Raw log-sum-exp of the row (NaN / +inf / all -inf are reported as INVALID_ARGUMENT).
//  2. Penalties in place on the distinct penalised tokens (repetition on prompt + output, then
//     presence + frequency * count on output tokens), their raw values kept for the logprob.
//  3. Greedy: the first maximum. Otherwise w_i = exp((l_i - max) / T) into scratch.
//  4. Rank order (logit descending, index ascending) is the order of a 64-bit key
//     (orderable logit bits << 32 | ~index). top-k keeps the keys >= the k-th largest key, found
//     by a bitwise search over the 64 key bits (64 block-wide counts). top-p keeps the keys >= the
//     largest K whose kept weight sum(w over keys >= K, within top-k) is >= top_p * Z (another
//     64-step search with double sums). min-p drops w < min_p; zero weights never draw.
//  5. Draw u * total along ascending indices: per-thread contiguous chunks, chunk sums scanned,
//     the chunk holding the crossing walks its elements.
// Sums run in a different order than the CPU's sequential loops (and w uses expf rather than the
// CPU's AVX-512 exp), so a draw that lands within rounding of a boundary may pick the neighbour.
// Cost: O(vocab) per pass and up to 130 passes per row for top-k + top-p (the row stays in L2);
// a radix select with histograms would need about 8 passes.
#include <algorithm>
#include <climits>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/host/kernel_math.h"
#include "kernels/cuda/ops_cuda.h"

namespace tessera::cuda {
namespace {

constexpr int kSampleThreads = 512;

struct RowParams {
  float temperature;
  int top_k;
  float top_p;
  float min_p;
  float repetition;
  float presence;
  float frequency;
  int pen_begin;
  int pen_count;
  double u;
};

struct PenEntry {
  int32_t token;
  int32_t output_count;
};

struct RowResult {
  int32_t token;
  float logprob;
  int32_t error;        // 0 ok, 1 bad logit at error_index, 2 all -inf, 3 all -inf after penalties
  int32_t error_index;
};

template <typename T>
__device__ T BlockSumT(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += scratch[w];
  return total;
}

__device__ int BlockMinInt(int v, int* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int m = INT_MAX;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) m = min(m, scratch[w]);
  return m;
}

__global__ void __launch_bounds__(kSampleThreads, 1)
    SampleKernel(float* logits, int64_t row_stride, int vocab, float* weights,
                 const RowParams* params, const PenEntry* entries, float* raw_saved,
                 RowResult* results) {
  __shared__ double dscratch[32];
  __shared__ float fscratch[32];
  __shared__ int iscratch[32];
  __shared__ double chunk_prefix[kSampleThreads];
  __shared__ int crossing;
  const int row = blockIdx.x;
  float* l = logits + row * row_stride;
  float* w = weights + static_cast<int64_t>(row) * vocab;
  const RowParams p = params[row];
  RowResult* result = results + row;

  // 1. Raw log-sum-exp and validation.
  int bad = INT_MAX;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = l[i];
    if (isnan(v) || v == INFINITY) bad = min(bad, i);
    mx = fmaxf(mx, v);
  }
  bad = BlockMinInt(bad, iscratch);
  mx = BlockMax(mx, fscratch);
  if (bad != INT_MAX || mx == -INFINITY) {
    if (threadIdx.x == 0) *result = RowResult{-1, 0.0f, bad != INT_MAX ? 1 : 2, bad};
    return;
  }
  double sum = 0.0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(l[i] - mx);
  sum = BlockSumT(sum, dscratch);
  const double lse = static_cast<double>(mx) + log(sum);

  // 2. Penalties (each entry is a distinct token, so threads never collide).
  const PenEntry* pe = entries + p.pen_begin;
  for (int j = threadIdx.x; j < p.pen_count; j += blockDim.x) {
    const int t = pe[j].token;
    float v = l[t];
    raw_saved[p.pen_begin + j] = v;
    if (p.repetition != 1.0f) v = v > 0.0f ? v / p.repetition : v * p.repetition;
    if (pe[j].output_count > 0) {
      v -= p.presence + p.frequency * static_cast<float>(pe[j].output_count);
    }
    l[t] = v;
  }
  __syncthreads();

  // 3. The first maximum of the penalised logits.
  float best_v = -INFINITY;
  int best_i = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (l[i] > best_v || (l[i] == best_v && i < best_i)) {
      best_v = l[i];
      best_i = i;
    }
  }
  const float top = BlockMax(best_v, fscratch);
  best_i = BlockMinInt(best_v == top ? best_i : INT_MAX, iscratch);
  int token = best_i;
  if (p.temperature != 0.0f) {
    if (top == -INFINITY) {
      if (threadIdx.x == 0) *result = RowResult{-1, 0.0f, 3, 0};
      return;
    }
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) w[i] = expf((l[i] - top) / p.temperature);
    __syncthreads();
    // 4. Rank cut-offs.
    uint64_t cut = 0;
    if (p.top_k > 0 && p.top_k < vocab) {
      cut = LargestKeyWhere([&](uint64_t candidate) {
        int count = 0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
          count += RankKey(l[i], i) >= candidate;
        }
        return BlockSumT(count, iscratch) >= p.top_k;
      });
    }
    if (p.top_p < 1.0f) {
      // Weight of the keys >= key_cut inside the top-k set; non-increasing in key_cut.
      auto mass_from = [&](uint64_t key_cut) {
        key_cut = key_cut > cut ? key_cut : cut;
        double s = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
          if (RankKey(l[i], i) >= key_cut) s += w[i];
        }
        return BlockSumT(s, dscratch);
      };
      const double target = static_cast<double>(p.top_p) * mass_from(cut);
      // The largest K with mass_from(K) >= target (>= cut, since mass_from(cut) is the total).
      cut = LargestKeyWhere([&](uint64_t candidate) { return mass_from(candidate) >= target; });
    }
    // 5. Draw along ascending indices.
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = min(vocab, static_cast<int>(threadIdx.x) * chunk);
    const int end = min(vocab, begin + chunk);
    auto kept = [&](int i) {
      return w[i] != 0.0f && w[i] >= p.min_p && RankKey(l[i], i) >= cut;
    };
    double mine = 0.0;
    int last_kept = -1;
    for (int i = begin; i < end; ++i) {
      if (kept(i)) {
        mine += w[i];
        last_kept = i;
      }
    }
    chunk_prefix[threadIdx.x] = mine;
    if (threadIdx.x == 0) crossing = INT_MAX;
    __syncthreads();
    if (threadIdx.x == 0) {
      double run = 0.0;
      for (int t = 0; t < static_cast<int>(blockDim.x); ++t) {
        const double s = chunk_prefix[t];
        chunk_prefix[t] = run;
        run += s;
      }
      dscratch[0] = run;
    }
    __syncthreads();
    const double total = dscratch[0];
    const double target = p.u * total;
    double cum = chunk_prefix[threadIdx.x];
    for (int i = begin; i < end; ++i) {
      if (!kept(i)) continue;
      cum += w[i];
      if (cum > target) {
        atomicMin(&crossing, i);
        break;
      }
    }
    __syncthreads();
    token = crossing;
    if (token == INT_MAX) {  // rounding left u * total beyond the sum: the last kept token
      const int last = -BlockMinInt(-last_kept, iscratch);
      token = last >= 0 ? last : best_i;
    }
  }
  if (threadIdx.x == 0) {
    float raw = l[token];
    int lo = 0, hi = p.pen_count - 1;  // entries are sorted by token
    while (lo <= hi) {
      const int mid = (lo + hi) / 2;
      if (pe[mid].token == token) {
        raw = raw_saved[p.pen_begin + mid];
        break;
      }
      if (pe[mid].token < token) lo = mid + 1; else hi = mid - 1;
    }
    *result = RowResult{token, static_cast<float>(static_cast<double>(raw) - lse), 0, 0};
  }
}

}  // namespace

absl::StatusOr<std::vector<SampleResult>> SampleRows(
    Tensor& logits, absl::Span<const SamplingParams> params,
    absl::Span<const absl::Span<const int32_t>> prompt_tokens,
    absl::Span<const absl::Span<const int32_t>> output_tokens, absl::Span<const uint64_t> steps,
    absl::Span<const double> fallback_random) {
  if (!logits.defined() || logits.ndim() != 2 || logits.dtype() != DType::kF32 ||
      (logits.dim(1) > 1 && logits.stride(1) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Sample: logits must be f32 [num_rows, vocab_size] with contiguous rows, got ",
        logits.defined() ? logits.DebugString() : "undefined"));
  }
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  if (static_cast<int64_t>(params.size()) != rows ||
      static_cast<int64_t>(prompt_tokens.size()) != rows ||
      static_cast<int64_t>(output_tokens.size()) != rows ||
      static_cast<int64_t>(steps.size()) != rows ||
      static_cast<int64_t>(fallback_random.size()) != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: ", rows, " logits rows need as many params, token lists, steps and "
                     "fallback numbers"));
  }
  if (vocab >= INT_MAX) return absl::InvalidArgumentError("Sample: vocabulary too large");
  ASSIGN_OR_RETURN(DeviceContext * ctx, ContextFor("Sample", {{"logits", &logits}}));
  if (rows == 0) return std::vector<SampleResult>{};
  std::vector<RowParams> row_params(rows);
  std::vector<PenEntry> entries;
  for (int64_t r = 0; r < rows; ++r) {
    const SamplingParams& sp = params[r];
    const Tensor row = logits.Select(0, r);
    absl::Status s = cpu::ValidateSampleArgs(row, sp, prompt_tokens[r], output_tokens[r],
                                             fallback_random[r]);
    if (!s.ok()) return Annotate(s, absl::StrCat("row ", r));
    RowParams& rp = row_params[r];
    rp.temperature = sp.temperature;
    rp.top_k = sp.top_k;
    rp.top_p = sp.top_p;
    rp.min_p = sp.min_p;
    rp.repetition = sp.repetition_penalty;
    rp.presence = sp.presence_penalty;
    rp.frequency = sp.frequency_penalty;
    rp.u = sp.seed.has_value() ? cpu::SeededUniform(*sp.seed, steps[r]) : fallback_random[r];
    rp.pen_begin = static_cast<int>(entries.size());
    const bool repetition = sp.repetition_penalty != 1.0f;
    const bool additive = sp.presence_penalty != 0.0f || sp.frequency_penalty != 0.0f;
    std::map<int32_t, int32_t> counts;  // token -> output count (0: prompt only)
    if (repetition) {
      for (int32_t t : prompt_tokens[r]) counts.emplace(t, 0);
    }
    if (repetition || additive) {
      for (int32_t t : output_tokens[r]) ++counts[t];
    }
    for (const auto& [t, c] : counts) entries.push_back({t, additive ? c : 0});
    rp.pen_count = static_cast<int>(entries.size()) - rp.pen_begin;
  }
  const Device device = logits.device();
  const size_t params_bytes = sizeof(RowParams) * rows;
  const size_t entries_bytes = sizeof(PenEntry) * std::max<size_t>(1, entries.size());
  ASSIGN_OR_RETURN(Tensor param_buf,
                   Tensor::Empty({static_cast<int64_t>(params_bytes)}, DType::kU8, device));
  ASSIGN_OR_RETURN(Tensor entry_buf,
                   Tensor::Empty({static_cast<int64_t>(entries_bytes)}, DType::kU8, device));
  ASSIGN_OR_RETURN(Tensor raw_buf,
                   Tensor::Empty({std::max<int64_t>(1, static_cast<int64_t>(entries.size()))},
                                 DType::kF32, device));
  ASSIGN_OR_RETURN(Tensor weights, Tensor::Empty({rows, vocab}, DType::kF32, device));
  ASSIGN_OR_RETURN(Tensor result_buf,
                   Tensor::Empty({static_cast<int64_t>(sizeof(RowResult) * rows)}, DType::kU8,
                                 device));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(param_buf.raw_data(), row_params.data(), params_bytes,
                                       cudaMemcpyHostToDevice, ctx->stream()));
  if (!entries.empty()) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(entry_buf.raw_data(), entries.data(),
                                         sizeof(PenEntry) * entries.size(),
                                         cudaMemcpyHostToDevice, ctx->stream()));
  }
  SampleKernel<<<static_cast<unsigned>(rows), kSampleThreads, 0, ctx->stream()>>>(
      logits.data<float>(), rows > 1 ? logits.stride(0) : vocab, static_cast<int>(vocab),
      weights.data<float>(), static_cast<const RowParams*>(param_buf.raw_data()),
      static_cast<const PenEntry*>(entry_buf.raw_data()), raw_buf.data<float>(),
      static_cast<RowResult*>(result_buf.raw_data()));
  CUDA_RETURN_IF_LAUNCH_FAILED();
  std::vector<RowResult> host(rows);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host.data(), result_buf.raw_data(),
                                       sizeof(RowResult) * rows, cudaMemcpyDeviceToHost,
                                       ctx->stream()));
  // The host vectors above must outlive the copies: wait here (the one sync of a sampling step).
  RETURN_IF_ERROR(ctx->Synchronize());
  std::vector<SampleResult> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    switch (host[r].error) {
      case 0: out[r] = SampleResult{host[r].token, host[r].logprob}; break;
      case 1:
        return absl::InvalidArgumentError(absl::StrCat("Sample: row ", r, ": logits[",
                                                       host[r].error_index,
                                                       "] is NaN or +inf, not a valid logit"));
      case 2: return absl::InvalidArgumentError(absl::StrCat("Sample: row ", r, ": every logit is -inf"));
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("Sample: row ", r, ": every logit is -inf after the penalties"));
    }
  }
  return out;
}

}  // namespace tessera::cuda
