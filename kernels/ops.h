// Device-neutral kernel entry points.
//
// Every operation a MoE decoder needs, dispatched on the device of its tensors to the CPU
// implementation (kernels/cpu, AVX2/AVX-512 chosen at run time) or, in CUDA builds, to
// kernels/cuda. Each operation also has a plain reference implementation in namespace
// tessera::ref (kernels/cpu/reference.h) that tests compare against.
//
// Conventions:
// - Activations are f32 on the CPU. Linear weights keep their checkpoint dtype (f32, bf16, f16,
//   fp8 e4m3 with 128x128 block scales, or MXFP4). Small parameters (norm weights, biases, router bias,
//   sinks) are f32.
// - Shapes are given in comments as [num_tokens, hidden_size] etc.; "contiguous" means row-major
//   with no gaps. Outputs are preallocated by the caller with the documented shape and dtype.
// - Bad shapes or dtypes return INVALID_ARGUMENT naming the operand; kernels never read or write
//   out of bounds.
// - Thread safety: operations on disjoint outputs may run concurrently; the CPU kernels use
//   ThreadPool::Default() internally.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/base/tensor.h"

namespace tessera {

// ---- Linear layers -----------------------------------------------------------------------------

// A linear layer's weight in the Hugging Face layout: [out_features, in_features] ("n x k"),
// row-major, rows contiguous. For fp8 e4m3 block quantisation (DeepSeek-V3 style) `scale_inv`
// holds one f32 multiplier per [block_n x block_k] tile: [ceil(n/block_n), ceil(k/block_k)];
// the real weight is w[i][j] * scale_inv[i / block_n][j / block_k].
//
// MXFP4 (OCP microscaling, the gpt-oss release's expert format) is marked by `mx_scales`:
// - weight: [n, k / 2] u8, two FP4 e2m1 codes per byte, element 2c in the low nibble of byte c
//   (code: bit 3 sign, bits 0-2 index into {0, 0.5, 1, 1.5, 2, 3, 4, 6});
// - mx_scales: [n, k / 32] u8, one E8M0 exponent per 32 consecutive elements of a row;
// - the real weight is e2m1(code) * 2^(scale - 127), exactly transformers' ldexp dequantisation
//   (integrations/mxfp4.py); k is a multiple of 32.
struct LinearWeight {
  Tensor weight;     // [n, k]: f32, bf16, f16 or f8_e4m3; MXFP4: [n, k / 2] u8
  Tensor scale_inv;  // undefined, or [ceil(n/block_n), ceil(k/block_k)] f32 (fp8 only)
  int block_n = 128;
  int block_k = 128;
  Tensor mx_scales;  // undefined, or [n, k / 32] u8 E8M0 exponents (MXFP4 weights only)
  // Keep this layer's input in f32 even under ActivationDType::kBF16 (router gates: a flipped
  // expert choice changes a token's output wholesale, and HF's DeepSeek-V3 gate runs in f32).
  bool f32_input = false;

  bool is_mxfp4() const { return mx_scales.defined(); }
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return is_mxfp4() ? weight.dim(1) * 2 : weight.dim(1); }
};

// MXFP4 elements per E8M0 scale.
inline constexpr int64_t kMxfp4BlockSize = 32;
// The FP4 e2m1 value of each code 0..15 (bit 3 the sign); a weight is kE2M1Values[code] *
// 2^(scale - 127), std::ldexp semantics, as transformers dequantises it.
inline constexpr float kE2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// out = x · Wᵀ (+ bias).
// x: [m, k] f32 (rows may be strided; elements within a row contiguous)
// bias: undefined or [n] f32
// out: [m, n] f32 contiguous
// Few rows (decode) take a GEMV-shaped path streaming the weights once; many rows (prefill) a
// blocked GEMM. Multi-threaded over n.
absl::Status Linear(const Tensor& x, const LinearWeight& w, const Tensor& bias, Tensor& out);

// Several independent Linear problems as one parallel job: the same results as calling Linear on
// each, but all decode-sized problems (m <= 8) share one pass over the thread pool, so a MoE layer
// pays one fork/join for every selected expert's projection instead of one per expert.
// Each problem: x [m_i, k_i], w [n_i, k_i], bias undefined or [n_i], out [m_i, n_i] allocated.
struct LinearProblem {
  const Tensor* x = nullptr;
  const LinearWeight* w = nullptr;
  const Tensor* bias = nullptr;  // nullptr = no bias
  Tensor* out = nullptr;
};
absl::Status LinearGroup(absl::Span<const LinearProblem> problems);

// Precision of the activations that enter matmuls with bf16 weights, process-wide (flag
// `--activation-dtype` of generate / worker / serve / model_bench).
// - kF32 (default): activations stay f32 and bf16 weights are widened to f32; results equal the
//   f32 reference to f32 rounding (the end-to-end reference checks need this on tiny models).
// - kBF16: activations are rounded to bf16 once per matmul and multiplied with `vdpbf16ps` (CPUs
//   with AVX512_BF16), as llama.cpp's bf16 path and Hugging Face bf16 inference do: ~1.6x faster
//   prefill and faster decode, relative error ~1e-3 per matmul. Layers marked
//   LinearWeight::f32_input (router gates) stay f32. Without AVX512_BF16 it computes in f32.
enum class ActivationDType { kF32, kBF16 };
inline constexpr char kActivationDTypeHelp[] =
    "f32: matmul inputs stay f32 (exact to f32 rounding); bf16: activations entering matmuls "
    "with bf16 weights are rounded to bf16 (AVX512_BF16 dot products, ~1.6x faster prefill, "
    "~1e-3 relative error, as llama.cpp and HF bf16 inference); unset: f32 unless the "
    "environment has TESSERA_LINEAR_BF16_DOT=1";
// Parses "f32" / "bf16"; the error names `flag` and the accepted values.
absl::StatusOr<ActivationDType> ParseActivationDType(absl::string_view text,
                                                     absl::string_view flag);
void SetActivationDType(ActivationDType dtype);
// The `--activation-dtype` flag of a command: empty leaves the process setting alone (f32, or
// bf16 under TESSERA_LINEAR_BF16_DOT=1); otherwise parses (errors name `flag`) and sets it.
absl::Status ApplyActivationDTypeFlag(absl::string_view text, absl::string_view flag);
ActivationDType GetActivationDType();
// True when kBF16 actually takes the bf16 dot-product path on this machine.
bool Bf16ActivationsSupported();

// ---- Normalisation and elementwise -------------------------------------------------------------

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.   x, out: [num_tokens, hidden] f32 (out may
// alias x); weight: [hidden] f32. Works on any 2-D view whose rows are contiguous, e.g. per-head
// q/k norm on [num_tokens * num_heads, head_dim].
absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

// residual += delta; out = RmsNorm(residual). residual, delta, out: [num_tokens, hidden] f32.
// The pre-norm transformer's "add & norm" in one pass.
absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out);

// out = silu(gate) * up, with gate_up: [num_tokens, 2 * inter] = [gate | up] (vLLM layout);
// out: [num_tokens, inter] f32.
absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out);

// gpt-oss clamped SwiGLU. gate_up: [num_tokens, 2 * inter] interleaved (gate = [..., 0::2],
// up = [..., 1::2], as the checkpoint stores it); gate = min(gate, limit);
// up = clamp(up, -limit, limit); out = (up + 1) * gate * sigmoid(alpha * gate).
absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out);

// In-place softmax over the last dimension. x: [rows, cols] f32 with contiguous rows.
absl::Status Softmax(Tensor& x);

// out[t] = table[ids[t] - vocab_start] (converted to f32), or zeros when ids[t] is outside
// [vocab_start, vocab_start + table.rows) (vocab-parallel embedding).
// table: [vocab_rows, hidden] f32/bf16/f16; ids: [num_tokens] i32; out: [num_tokens, hidden] f32.
// An id outside [0, vocab_size) is INVALID_ARGUMENT when vocab_size > 0.
absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out);

// out += scale * x (elementwise, same shape, f32).
absl::Status Axpy(float scale, const Tensor& x, Tensor& out);

// ---- Rotary position embedding -----------------------------------------------------------------

struct RopeConfig {
  enum class Scaling { kNone, kLinear, kYarn, kLlama3 };
  int head_dim = 0;     // size of each head vector
  int rotary_dim = 0;   // leading dims that rotate (partial rotary); 0 means head_dim
  bool neox_style = true;  // true: rotate halves (x[i], x[i + d/2]); false: GPT-J pairs (x[2i], x[2i+1])
  double theta = 10000.0;
  int64_t max_position = 4096;
  Scaling scaling = Scaling::kNone;
  double factor = 1.0;                       // linear / yarn / llama3
  int64_t original_max_position = 0;         // yarn / llama3
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn
  double mscale = 1.0, mscale_all_dim = 0.0; // yarn (DeepSeek-V3); 0 = unused
  bool truncate = true;                      // yarn: round the correction range (gpt-oss: false)
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  // Multiplier applied to cos and sin (YaRN's attention scaling as the HF implementations do).
  double AttentionScaling() const;
};

// Precomputed cos/sin tables for positions [0, max_position).
class RopeCache {
 public:
  static absl::StatusOr<RopeCache> Create(const RopeConfig& config);
  const RopeConfig& config() const { return config_; }
  // [max_position, rotary_dim / 2] f32 each; already multiplied by AttentionScaling().
  const Tensor& cos() const { return cos_; }
  const Tensor& sin() const { return sin_; }
  // Inverse frequencies [rotary_dim / 2] (after scaling), for tests.
  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  RopeConfig config_;
  Tensor cos_, sin_;
  std::vector<double> inv_freq_;
};

// Rotates x in place. x: [num_tokens, num_heads, head_dim] f32 (head rows contiguous; token
// stride may be larger, e.g. a view into a fused qkv buffer); positions: [num_tokens] i32 or i64.
// A position >= max_position is OUT_OF_RANGE.
absl::Status ApplyRope(const RopeCache& cache, const Tensor& positions, Tensor& x);

// ---- MoE routing -------------------------------------------------------------------------------

struct RouterConfig {
  enum class Scoring {
    kSoftmax,        // softmax over all experts, then top-k (Mixtral, Qwen2/3-MoE)
    kSoftmaxTopK,    // top-k on logits, then softmax over the selected (gpt-oss)
    kSigmoid,        // sigmoid scores; selection by score + correction bias (DeepSeek-V3, GLM-4.5)
  };
  Scoring scoring = Scoring::kSoftmax;
  int top_k = 2;
  bool renormalize = false;  // divide the selected weights by their sum (norm_topk_prob)
  int n_group = 1;           // group-limited selection (DeepSeek-V3): experts in n_group groups,
  int topk_group = 1;        // groups ranked by the sum of their top-2 biased scores
  float routed_scaling_factor = 1.0f;  // multiplies the final weights
};

// logits: [num_tokens, num_experts] f32; correction_bias: undefined or [num_experts] f32;
// topk_weights: [num_tokens, top_k] f32; topk_ids: [num_tokens, top_k] i32.
// Selected experts come in descending order of selection score; ties go to the lower index.
absl::Status MoeRoute(const Tensor& logits, const Tensor& correction_bias,
                      const RouterConfig& config, Tensor& topk_weights, Tensor& topk_ids);

// ---- Attention over a paged KV cache -----------------------------------------------------------

// The KV cache of one layer is split into blocks of `block_size` token slots. A sequence's block
// table lists its blocks in order; token position p lives in block block_table[p / block_size],
// slot p % block_size. slot_mapping values are block * block_size + slot.

// Writes new keys/values into the cache.
// k: [num_tokens, num_kv_heads, head_dim_k], v: [num_tokens, num_kv_heads, head_dim_v] f32;
// slot_mapping: [num_tokens] i64 (a negative slot skips the token);
// k_cache: [num_blocks, block_size, num_kv_heads, head_dim_k], v_cache likewise with head_dim_v.
// Caches may be strided views (the MLA latent cache uses one buffer for both).
absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache);

struct AttentionParams {
  float scale = 1.0f;       // multiplies q·k
  int sliding_window = 0;   // > 0: a query at position p sees keys at positions > p - window
  Tensor sinks;             // undefined, or [num_heads] f32: an extra logit per head that joins
                            // the softmax denominator only (gpt-oss)
};

// Variable-length causal attention for a batch of sequences whose new tokens (a prefill chunk, or
// one decode token) are already written to the cache.
// q: [num_tokens, num_heads, head_dim_k] f32, tokens of sequence s at rows
//    [query_start_loc[s], query_start_loc[s + 1]);
// k_cache / v_cache: as in WriteKvCache (num_heads must be a multiple of num_kv_heads: GQA/MQA);
// block_tables: [num_seqs, max_blocks_per_seq] i32;
// seq_lens: [num_seqs] i32, the context length of each sequence including its new tokens: the
//   query rows of sequence s are positions seq_lens[s] - q_len .. seq_lens[s] - 1;
// query_start_loc: [num_seqs + 1] i32;
// out: [num_tokens, num_heads, head_dim_v] f32.
absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out);

// ---- Sampling ----------------------------------------------------------------------------------

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = 0;             // 0 or -1 = disabled
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // on prompt and output tokens (HF/vLLM semantics)
  float presence_penalty = 0.0f;    // on output tokens
  float frequency_penalty = 0.0f;   // on output tokens
  std::optional<uint64_t> seed;     // per-request seed: same seed, same tokens
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;  // log-probability of `token` under the raw model distribution
};

// Samples one token from logits: [vocab_size] f32 (modified in place by penalties and
// processing). prompt_tokens / output_tokens drive the penalties. `step` is the index of the token
// being generated; with a seed, the draw depends only on (seed, step), so results are
// reproducible whatever else runs in the batch. Without a seed `fallback_random` (a uniform
// number in [0, 1) supplied by the caller) is used.
// Order (vLLM): penalties, temperature, top-k, top-p, min-p, then draw.
absl::StatusOr<SampleResult> Sample(Tensor& logits, const SamplingParams& params,
                                    absl::Span<const int32_t> prompt_tokens,
                                    absl::Span<const int32_t> output_tokens, uint64_t step,
                                    double fallback_random);

// Validates sampling parameters (temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1,
// repetition_penalty > 0, ...) with an error naming the field.
absl::Status ValidateSamplingParams(const SamplingParams& params);

}  // namespace tessera
