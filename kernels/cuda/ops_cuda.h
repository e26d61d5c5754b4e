// The CUDA implementations behind the device-neutral entry points of kernels/ops.h.
//
// kernels/ops_*.cc route tensors that live on a CUDA device here (CUDA builds only). Each function
// has exactly the contract of its ops.h namesake, with these differences:
// - Every tensor (inputs, outputs, small parameters such as norm weights, biases, sinks, block
//   tables) must live on the same CUDA device; otherwise INVALID_ARGUMENT naming the operand.
//   Activations stay f32, as on the CPU, so the two backends are interchangeable tensor for tensor.
// - Work is queued on the device's DeviceContext stream (kernels/cuda/cuda_device.h) and the
//   functions return without waiting: no host synchronisation inside a layer. Launch errors come
//   back as Status at once; faults inside a kernel surface at the next synchronising call.
// - Shapes and dtypes are validated on the host as on the CPU. Index *values* that live on the
//   device (block tables, slot mappings, sequence lengths, token ids) are not read back: kernels
//   bound-check them and skip (or zero) what is out of range instead of returning an error, so a
//   corrupt table can never make a kernel touch memory outside its tensors.
// This header has no CUDA includes, so host-only translation units may include it.
// Thread safety: as kernels/ops.h; calls from several threads interleave on the one stream.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cuda {

// ---- Linear (linear.cu) ------------------------------------------------------------------------
// m <= kGemvMaxRows: a GEMV kernel that streams the weight once and dequantises in registers
// (f32, bf16, f16, fp8 e4m3 with block scales). Larger m: cuBLASLt (bf16/f16 weights with x
// rounded to the weight dtype, f32 weights in full f32, fp8 dequantised to bf16 first).
inline constexpr int64_t kGemvMaxRows = 8;
absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out);
absl::Status LinearGroup(absl::Span<const LinearProblem> problems);

// ---- Normalisation and elementwise (elementwise.cu) --------------------------------------------
absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out);
absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out);
absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out);
absl::Status Softmax(Tensor& x);
// Ids outside [0, vocab_size) give zero rows (the CPU path returns INVALID_ARGUMENT: the ids live
// on the device and are not read back).
absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out);
absl::Status Axpy(float scale, const Tensor& x, Tensor& out);

// ---- RoPE (elementwise.cu) ---------------------------------------------------------------------
// cos/sin: the RopeCache tables copied to x's device ([max_position, rotary_dim / 2] f32).
// Positions outside [0, max_position) leave their token unrotated.
absl::Status ApplyRope(const RopeConfig& config, const Tensor& cos, const Tensor& sin,
                       const Tensor& positions, Tensor& x);

// ---- MoE routing (moe_routing.cu) --------------------------------------------------------------
absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids);

// ---- MoE expert computation (moe.cu) -----------------------------------------------------------
// The CUDA-only steps of a MoE layer after MoeRoute, with no host synchronisation:
//   perm = MoePermute(topk_ids, E)                         // group (token, slot) pairs by expert
//   MoeExpertLinear(x, true, perm, gate_up_w, {}, h)       // h: [T * top_k, 2 * inter]
//   SiluAndMul(h, a)                                       // any activation on the rows
//   MoeExpertLinear(a, false, perm, down_w, {}, y)         // y: [T * top_k, hidden]
//   MoeUnpermute(y, perm, topk_weights, out)               // out[t] = sum_j w[t, j] * y[slot]
// Rows of h / y are in expert order (row p belongs to slot perm.rows[p]).
struct MoePermutation {
  int num_experts = 0;
  int top_k = 0;
  Tensor expert_offsets;  // [num_experts + 1] i32: expert e's rows are [off[e], off[e + 1])
  Tensor rows;            // [num_slots] i32: the slot (token * top_k + j) of each row
  Tensor slot_pos;        // [num_slots] i32: the row of each slot (-1: expert id out of range)
};
// topk_ids: [num_tokens, top_k] i32 contiguous on the device.
absl::StatusOr<MoePermutation> MoePermute(const Tensor& topk_ids, int num_experts);
// out[p] = in(p) · W_e(p)ᵀ (+ bias_e) for every row p, where e(p) is the row's expert and in(p) is
// x[perm.rows[p] / top_k] (gather_from_tokens: x is [num_tokens, k]) or x[p] (x is
// [num_slots, k]). experts: one weight per expert, same dtype / shape / block scales; biases:
// empty or one (possibly undefined) [n] f32 per expert; out: [num_slots, n] f32.
absl::Status MoeExpertLinear(const Tensor& x, bool gather_from_tokens,
                             const MoePermutation& perm, absl::Span<const LinearWeight> experts,
                             absl::Span<const Tensor> biases, Tensor& out);
// out[t] = sum_j topk_weights[t, j] * expert_out[perm.slot_pos[t * top_k + j]], the slots added in
// j order. expert_out: [num_slots, hidden]; topk_weights: [num_tokens, top_k]; out:
// [num_tokens, hidden] f32.
absl::Status MoeUnpermute(const Tensor& expert_out, const MoePermutation& perm,
                          const Tensor& topk_weights, Tensor& out);

// ---- Paged attention (attention.cu) ------------------------------------------------------------
absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache);
// The grid is sized from shapes only (query rows x heads x key splits); each query row finds its
// sequence in query_start_loc on the device, so no device value is read back.
absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out);

// ---- Sampling (sampling.cu) --------------------------------------------------------------------
// One row per request: logits [num_rows, vocab_size] f32 on the device (modified in place by
// penalties), params / prompt / output tokens / steps / fallback_random per row (host).
// Follows the contract of kernels/cpu/sampling.h step by step; only the token ids and their raw
// logprobs come back to the host. Validates params and token ids on the host.
absl::StatusOr<std::vector<SampleResult>> SampleRows(
    Tensor& logits, absl::Span<const SamplingParams> params,
    absl::Span<const absl::Span<const int32_t>> prompt_tokens,
    absl::Span<const absl::Span<const int32_t>> output_tokens, absl::Span<const uint64_t> steps,
    absl::Span<const double> fallback_random);

}  // namespace tessera::cuda
