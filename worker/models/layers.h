// Shared building blocks of the decoder models: weight loaders (Hugging Face tensor names),
// dense gated MLP, Mixture-of-Experts block and grouped-query attention over the paged KV cache.
//
// Every loader validates the tensors it reads (presence, shape, dtype) and fails with a status
// naming the tensor; every Forward takes f32 activations [num_tokens, ...] and calls kernels from
// kernels/ops.h. Semantics follow the Hugging Face modelling code of each family (noted inline).
//
// Thread safety: layers are immutable after loading; Forward() may be called from one thread at a
// time per layer object (they allocate their own temporaries; kernels parallelise internally).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"
#include "worker/attention_batch.h"
#include "worker/kv_cache.h"

namespace tessera {

class Checkpoint;    // worker/checkpoint/checkpoint.h
class Communicator;  // parallel/communicator.h
struct ModelConfig;  // worker/checkpoint/model_config.h

// ---- Sharding (tensor / expert parallelism) ----------------------------------------------------

// The part of the model this rank holds (docs/sharding.md has the table). An instance of
// world = pp * S ranks is pp pipeline stages of S ranks each; world rank = pp_rank * S + s.
// Inside a stage, S = max(tp * dp, ep) and s = dp_rank * tp + tp_rank (tp fastest), the order
// of parallel/mesh.h and the planner. Layouts of a stage:
// - tp = T (ep 1, dp 1): attention heads, dense MLPs and every expert's FFN split over T.
// - tp = T, ep = T: as above, but routed experts partitioned whole over the T ranks.
// - ep = E alone (tp 1, dp 1): attention replicated on the E ranks (same tokens), routed experts
//   partitioned over E. The planner's tp 1 / dp E / ep E holds the same weights.
// - dp = D, tp = T, ep = D * T: data-parallel attention: each DP rank (T ranks, attention and
//   dense layers split over its T) runs its own sequences; MoE layers dispatch tokens to the
//   experts' owners over the whole stage and combine them back (all-to-all-v).
// In every layout the shared experts are split over the whole stage (the planner's MoE group).
// Groups: tp (the T ranks of one DP rank of one stage: heads, dense MLPs, vocab), stage (the S
// ranks of a stage: MoE layers) and pp (the ranks with the same s in every stage: activations
// between stages, the logits broadcast). Groups of one rank are null; a group as large as the
// world is the world communicator itself.
struct Range;
struct ShardGroups;
struct Shard {
  int tp_rank = 0, tp_size = 1;
  int ep_rank = 0, ep_size = 1;
  int dp_rank = 0, dp_size = 1;
  int pp_rank = 0, pp_size = 1;
  std::shared_ptr<const ShardGroups> groups;  // null when world == 1

  int stage_size() const { return std::max(tp_size * dp_size, ep_size); }
  int stage_rank() const { return ep_size > 1 ? ep_rank : dp_rank * tp_size + tp_rank; }
  int world_size() const { return pp_size * stage_size(); }
  int world_rank() const { return pp_rank * stage_size() + stage_rank(); }
  bool first_stage() const { return pp_rank == 0; }
  bool last_stage() const { return pp_rank == pp_size - 1; }
  // Communicators (null when the group has one rank).
  Communicator* tp_comm() const;
  Communicator* stage_comm() const;
  Communicator* pp_comm() const;
  // The global decoder layers of this pipeline stage (all of them without pp).
  Range StageLayers(int num_layers) const;
  // Checks the layout (UNIMPLEMENTED naming the unsupported combination) and the ranks, then
  // builds this rank's groups from `world` (collective: every rank of the instance calls it with
  // the same layout). `world` is borrowed and must outlive the shard.
  static absl::StatusOr<Shard> Create(int tp_rank, int tp_size, int ep_rank, int ep_size,
                                      int dp_rank, int dp_size, int pp_rank, int pp_size,
                                      Communicator* world);
  // The layout check alone, before anything is loaded or connected; errors say why.
  static absl::Status CheckLayout(int tp_size, int ep_size, int dp_size, int pp_size);
};

// A rank's coordinates from its world rank (the order above).
struct ShardCoords {
  int tp_rank = 0, ep_rank = 0, dp_rank = 0, pp_rank = 0;
};
ShardCoords ShardCoordsOf(int tp_size, int ep_size, int dp_size, int pp_size, int world_rank);

struct ShardGroups {
  Communicator* tp = nullptr;
  Communicator* stage = nullptr;
  Communicator* pp = nullptr;
  std::vector<std::unique_ptr<Communicator>> owned;  // sub-groups made for this shard
  ~ShardGroups();
};

// [begin, end) of part `index` when `total` items are split into `parts` equal parts
// (the last part is shorter when total % parts != 0).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
Range SplitRange(int64_t total, int parts, int index);
// INVALID_ARGUMENT "<what> (<total>) is not divisible by <name> <parts>" unless total % parts == 0.
absl::Status CheckDivisible(int64_t total, int parts, absl::string_view what,
                            absl::string_view name);

// Sums `t` (in place) over the shard's tp group / its stage when `partial` is true and the group
// has > 1 rank: attention and dense MLP outputs (tp), MoE outputs (stage).
absl::Status AllReduceSum(const Shard& shard, bool partial, Tensor& t);
absl::Status AllReduceStage(const Shard& shard, bool partial, Tensor& t);

// Which part of a checkpoint weight [out_features, in_features] a rank loads.
struct LinearSlice {
  enum class Kind { kFull, kOutRows, kInCols };
  Kind kind = Kind::kFull;
  Range range;  // rows (kOutRows: column-parallel) or columns (kInCols: row-parallel)
  static LinearSlice OutRows(Range r) { return {Kind::kOutRows, r}; }
  static LinearSlice InCols(Range r) { return {Kind::kInCols, r}; }
};

// ---- Weight loading ----------------------------------------------------------------------------

// How linear weights are stored (from config.json's quantization_config).
struct WeightFormat {
  bool fp8_block = false;  // fp8 e4m3 weights with "<name>_scale_inv" block scales
  int block_n = 128;       // weight_block_size[0]
  int block_k = 128;       // weight_block_size[1]
  // Concatenate gate_proj and up_proj into one [2 * inter, hidden] weight at load time (one
  // Linear call instead of two). Off by default: it copies those weights out of the checkpoint
  // mapping, doubling their resident memory and the load time.
  bool fuse_gate_up = false;
};
WeightFormat WeightFormatFromConfig(const ModelConfig& config);

// A Linear layer: weight (+ optional bias).
struct LinearLayer {
  LinearWeight weight;  // [out_features, in_features]
  Tensor bias;          // undefined or [out_features] f32

  int64_t out_features() const { return weight.out_features(); }
  int64_t in_features() const { return weight.in_features(); }
  // x: [m, in_features] f32; out (allocated when undefined or of another shape): [m, out] f32.
  absl::Status Forward(const Tensor& x, Tensor& out) const;
};

// Loads "<prefix>.weight" [out_features, in_features] (f32/bf16/f16 kept as stored; fp8 e4m3
// together with "<prefix>.weight_scale_inv" [ceil(out/block_n), ceil(in/block_k)] f32), and, when
// `bias` is true, "<prefix>.bias" [out_features] converted to f32. A negative expected size is
// not checked. Errors name the tensor and the expected and actual shapes.
// With a slice, only that part is kept: kOutRows rows [begin, end) (a zero-copy view; bias rows
// too), kInCols columns [begin, end) (copied; the bias, if asked for, is the whole bias — the
// caller asks for it on one rank only). An fp8 slice that does not start on a scale block is
// dequantised to f32 so every element keeps its exact scale.
absl::StatusOr<LinearLayer> LoadLinear(const Checkpoint& ckpt, absl::string_view prefix,
                                       int64_t out_features, int64_t in_features, bool bias,
                                       const WeightFormat& format,
                                       const LinearSlice& slice = {});

// Loads tensor `name`, checks its shape and converts it to a contiguous f32 tensor
// (norm weights, biases, router correction bias, sinks).
absl::StatusOr<Tensor> LoadF32(const Checkpoint& ckpt, absl::string_view name,
                               absl::Span<const int64_t> shape);
// As LoadF32, but reads only [range.begin, range.end) along `dim` (all of it when dim < 0).
absl::StatusOr<Tensor> LoadF32Part(const Checkpoint& ckpt, absl::string_view name,
                                   absl::Span<const int64_t> shape, int dim, Range range);
// An RMSNorm weight "<prefix>.weight" [size] as f32.
absl::StatusOr<Tensor> LoadNormWeight(const Checkpoint& ckpt, absl::string_view prefix,
                                      int64_t size);

// Concatenates two LinearWeights of equal in_features and dtype along out_features (fp8 only
// when out_features of `a` is a multiple of block_n). Returns INVALID_ARGUMENT otherwise.
absl::StatusOr<LinearWeight> ConcatOutFeatures(const LinearWeight& a, const LinearWeight& b);

// ---- Rotary embedding --------------------------------------------------------------------------

// The RopeConfig of a model from its config (rope_theta, rope_scaling, partial rotary, NeoX or
// GPT-J pairing as the family's HF code applies it). head_dim: q/k head size; rotary_dim: rotating
// dims (0 = head_dim).
absl::StatusOr<RopeConfig> MakeRopeConfig(const ModelConfig& config, int head_dim,
                                          int rotary_dim);

// ---- Dense gated MLP ---------------------------------------------------------------------------

// down_proj(act(gate_proj(x)) * up_proj(x)) with SiLU. Names: "<prefix>.gate_proj",
// "<prefix>.up_proj", "<prefix>.down_proj" (Mixtral experts: "w1", "w3", "w2" via MlpNames).
struct MlpNames {
  std::string gate = "gate_proj";
  std::string up = "up_proj";
  std::string down = "down_proj";
  bool bias = false;  // "<name>.bias" on all three (Llama's mlp_bias); down's on part 0 only
};

class GatedMlp {
 public:
  // With parts > 1 this rank keeps part `index` of the intermediate dimension (gate/up rows,
  // down_proj columns) and its Forward returns a partial sum.
  static absl::StatusOr<GatedMlp> Load(const Checkpoint& ckpt, absl::string_view prefix,
                                       int64_t hidden_size, int64_t intermediate_size,
                                       const WeightFormat& format, const MlpNames& names = {},
                                       int parts = 1, int index = 0);
  int64_t hidden_size() const { return down_.out_features(); }
  int64_t intermediate_size() const { return down_.in_features(); }

  // x: [num_tokens, hidden_size] f32 (rows may be strided);
  // out (allocated when undefined or of another shape): [num_tokens, hidden_size] f32.
  absl::Status Forward(const Tensor& x, Tensor& out) const;

 private:
  bool fused_ = false;     // gate_up_ holds [gate; up] rows
  LinearLayer gate_up_;    // fused [2 * inter, hidden], or gate only when !fused_
  LinearLayer up_;         // when !fused_
  LinearLayer down_;
};

// ---- Mixture of Experts ------------------------------------------------------------------------

struct MoeSpec {
  enum class Experts {
    kSeparate,  // "<prefix>.experts.{e}.{gate_proj,up_proj,down_proj}" (Qwen-MoE, GLM, DeepSeek)
    kMixtral,   // "<prefix>.experts.{e}.{w1,w3,w2}" (Mixtral, MiniMax-M2)
    kGptOss,    // stacked "<prefix>.experts.gate_up_proj" [E, hidden, 2*inter] (+ _bias
                // [E, 2*inter]), "down_proj" [E, inter, hidden] (+ _bias [E, hidden]); x @ W
                // layout, converted at load time to per-expert [out, in]; ClampedSwiGlu. Or the
                // MXFP4 release: "<x>_blocks" [E, out, in/32, 16] + "<x>_scales" [E, out, in/32]
                // U8, kept as MXFP4 LinearWeights (rows are outputs already)
  };
  Experts experts = Experts::kSeparate;
  int num_experts = 0;
  int64_t hidden_size = 0;
  int64_t moe_intermediate_size = 0;
  RouterConfig router;
  std::string gate_name = "gate";     // router Linear "<prefix>.<gate_name>" [num_experts, hidden]
  bool router_bias = false;           // router Linear has a bias (gpt-oss "router")
  bool correction_bias = false;       // "<prefix>.<correction_bias_name>" [num_experts] f32
  std::string correction_bias_name = "gate.e_score_correction_bias";
  // Shared experts: one GatedMlp of shared_intermediate_size (0 = none), named
  // "<prefix>.<shared_name>"; with shared_gate, its output is multiplied by
  // sigmoid("<prefix>.shared_expert_gate" · x) (Qwen2-MoE).
  int64_t shared_intermediate_size = 0;
  std::string shared_name = "shared_experts";
  bool shared_gate = false;
  float swiglu_alpha = 1.702f;  // gpt-oss
  float swiglu_limit = 7.0f;    // gpt-oss
};

class MoeBlock {
 public:
  // With a sharded `shard`, loads only this rank's experts (or expert slices) and shared-expert
  // slice (see Shard); Forward then returns this rank's partial sum.
  static absl::StatusOr<MoeBlock> Load(const Checkpoint& ckpt, absl::string_view prefix,
                                       const MoeSpec& spec, const WeightFormat& format,
                                       const Shard& shard = {});
  // Whether Forward's output is a partial sum to be all-reduced over the shard's group.
  bool partial() const { return partial_; }
  // Data-parallel mode: Forward exchanges tokens with the other ranks (every rank must call it,
  // with zero rows when it has no tokens).
  bool dispatches() const { return dispatch_; }
  const MoeSpec& spec() const { return spec_; }

  // Routes every token to top_k experts, runs each expert on the rows routed to it and adds the
  // weighted outputs (+ the shared experts).
  // x: [num_tokens, hidden_size] f32; out (allocated when undefined or of another shape):
  // [num_tokens, hidden_size] f32.
  absl::Status Forward(const Tensor& x, Tensor& out) const;

 private:
  struct Expert {
    LinearLayer gate_up;  // [2 * inter, hidden]: [gate | up] halves, or gpt-oss interleaved
    LinearLayer gate;     // when gate_up is not fused
    LinearLayer up;
    LinearLayer down;     // [hidden, inter]
    bool fused = false;
  };
  // Runs the owned experts over rows of x: for each expert e, rows[e] lists row indices of x and
  // wts[e] their weights; out[row] += weight * expert(x[row]) (out: [x rows, hidden] f32).
  absl::Status RunExperts(const Tensor& x, const std::vector<std::vector<int32_t>>& rows,
                          const std::vector<std::vector<float>>& wts, Tensor& out) const;
  // gpt-oss MXFP4 experts ("<prefix>.experts.{gate_up,down}_proj_{blocks,scales,bias}") into
  // moe.experts_ as MXFP4 LinearWeights: this rank's expert range, or with parts > 1 every
  // expert's part (refused unless each part's down_proj columns are whole MX blocks of 32).
  static absl::Status LoadGptOssMxfp4Experts(const Checkpoint& ckpt, absl::string_view prefix,
                                             const MoeSpec& spec, const Shard& shard, int parts,
                                             MoeBlock& moe);
  // Router: weights / ids [rows of x, top_k].
  absl::Status Route(const Tensor& x, Tensor& weights, Tensor& ids) const;
  // out += gate * s (the shared experts' output s of x).
  absl::Status AddShared(const Tensor& x, const Tensor& s, Tensor& out) const;
  // Data-parallel forward: this rank's slice of its DP rank's tokens is dispatched, combined,
  // and the slices gathered over the tp group.
  absl::Status DataParallelForward(const Tensor& x, Tensor& out) const;
  // Dispatch (token, expert) pairs of x to the owners, combine the results into out;
  // rows_per_rank: how many tokens each stage rank dispatched.
  absl::Status DispatchForward(const Tensor& x, const Tensor& weights, const Tensor& ids,
                               Tensor& out, std::vector<int64_t>& rows_per_rank) const;
  // Shared experts split over the stage applied to every rank's own tokens (all-gather-v, then
  // the partial sums back by all-to-all-v).
  absl::Status SharedGatheredForward(const Tensor& xs, const std::vector<int64_t>& rows_per_rank,
                                     Tensor& out) const;

  MoeSpec spec_;
  Shard shard_;
  bool partial_ = false;
  bool dispatch_ = false;
  std::vector<bool> owned_;                 // [num_experts]: this rank runs expert e
  LinearLayer router_;
  Tensor correction_bias_;                  // undefined or [num_experts] f32
  std::vector<Expert> experts_;
  std::unique_ptr<GatedMlp> shared_;        // null without shared experts
  LinearLayer shared_gate_;                 // [1, hidden] when spec_.shared_gate
};

// A decoder layer's feed-forward half into `delta`: the MoE block when `moe` is set (partial
// sums reduced over the stage), else the dense gated MLP (reduced over the tp group).
absl::Status FeedForward(const Shard& shard, const MoeBlock* moe, const GatedMlp* mlp,
                         const Tensor& x, Tensor& delta);

// Model::ForwardIdle for decoders whose layers hold an optional `moe` block: a data-parallel
// rank without tokens joins every dispatching MoE layer's dispatch / combine with zero rows.
template <typename Layer>
absl::Status ForwardIdleMoe(const std::vector<Layer>& layers, int64_t hidden_size) {
  ASSIGN_OR_RETURN(Tensor none, Tensor::Empty({0, hidden_size}, DType::kF32));
  Tensor out;
  for (const Layer& layer : layers) {
    if (layer.moe && layer.moe->dispatches()) RETURN_IF_ERROR(layer.moe->Forward(none, out));
  }
  return absl::OkStatus();
}

// ---- Grouped-query attention -------------------------------------------------------------------

struct AttentionSpec {
  int64_t hidden_size = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  bool qkv_bias = false;  // q/k/v_proj have biases (Qwen2, GLM-4.5, gpt-oss)
  bool o_bias = false;    // o_proj has a bias (gpt-oss)
  enum class QkNorm {
    kNone,
    kPerHead,    // RMSNorm over each head_dim vector: "q_norm"/"k_norm" [head_dim] (Qwen3, GLM)
    kFullWidth,  // RMSNorm over all heads at once: [num_heads * head_dim] (MiniMax-M2)
  };
  QkNorm qk_norm = QkNorm::kNone;
  float rms_norm_eps = 1e-6f;
  int sliding_window = 0;  // > 0 on sliding layers
  bool sinks = false;      // "<prefix>.sinks" [num_heads] (gpt-oss)
  float scale = 0.0f;      // 0 = head_dim^-0.5
};

class GqaAttention {
 public:
  // Loads "<prefix>.{q,k,v,o}_proj" (+ "q_norm"/"k_norm", "sinks"). `rope` is shared by layers.
  // With shard.tp_size > 1 this rank keeps num_heads / tp query heads (and their sinks), its KV
  // heads (num_kv_heads / tp, or the one KV head its query heads use when num_kv_heads < tp), and
  // the matching o_proj columns; Forward then returns a partial sum (o_proj's bias on tp rank 0).
  // A full-width q/k norm (MiniMax-M2) sums its squares over the group.
  static absl::StatusOr<GqaAttention> Load(const Checkpoint& ckpt, absl::string_view prefix,
                                           const AttentionSpec& spec,
                                           std::shared_ptr<const RopeCache> rope,
                                           const WeightFormat& format, const Shard& shard = {});
  bool partial() const { return shard_.tp_size > 1; }
  const AttentionSpec& spec() const { return spec_; }
  LayerKvSpec kv_spec() const {
    return {spec_.num_kv_heads, spec_.head_dim, spec_.head_dim, false};
  }

  // x: [num_tokens, hidden_size] f32 (normed input); k_cache / v_cache: this layer's cache views
  // (KvCache::k_cache(layer), v_cache(layer)); out (allocated when undefined or of another
  // shape): [num_tokens, hidden_size] f32. Writes this step's k/v at batch.slot_mapping.
  absl::Status Forward(const Tensor& x, const AttentionBatch& batch, Tensor& k_cache,
                       Tensor& v_cache, Tensor& out) const;

 private:
  // Full-width RMSNorm of x [t, width_local] whose mean runs over the whole (sharded) width;
  // `replicas` = how many ranks hold each column (1, or tp / num_kv_heads for replicated k).
  absl::Status ShardedFullWidthNorm(Tensor& x, const Tensor& weight, int64_t full_width,
                                    int replicas) const;

  AttentionSpec spec_;  // local head counts when sharded
  AttentionSpec full_spec_;
  Shard shard_;
  std::shared_ptr<const RopeCache> rope_;
  LinearLayer qkv_;  // fused [q | k | v] rows when dtypes allow; else q_, k_, v_
  LinearLayer q_, k_, v_;
  bool fused_ = false;
  LinearLayer o_;
  Tensor q_norm_, k_norm_;  // undefined, [head_dim] or [num_heads * head_dim] / [kv * head_dim]
  Tensor sinks_;            // undefined or [num_heads] f32
};

// ---- Small helpers -----------------------------------------------------------------------------

// Makes `t` a contiguous tensor of `shape` and dtype f32, reusing its buffer when it already is.
absl::Status EnsureF32(Tensor& t, absl::Span<const int64_t> shape);

// The ends every decoder shares: token embedding, final norm and lm_head (tied to the embedding
// when the config says so and the checkpoint has no lm_head.weight).
// With shard.tp_size > 1 both are vocab-parallel: this rank keeps vocabulary rows
// SplitRange(vocab, tp, tp_rank) of each.
struct DecoderEnds {
  Tensor embed;       // [vocab rows, hidden] checkpoint dtype, contiguous
  int64_t vocab_start = 0;
  Tensor final_norm;  // [hidden] f32 (last stage)
  LinearLayer lm_head;
  Shard shard;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;

  // residual (allocated): [num_tokens, hidden] f32 embeddings (summed over the group).
  absl::Status Embed(const Tensor& input_ids, Tensor& residual) const;
  // hidden: [rows, hidden]; logits (allocated): [rows, vocab_size] f32 on every rank.
  absl::Status Logits(const Tensor& hidden, Tensor& logits) const;

  // The ends of one pipeline stage's forward pass. BeginStage: the first stage embeds (delta
  // stays undefined: the first layer norms the residual alone), the others receive the previous
  // stage's residual and delta ([num_tokens, hidden] f32). EndStage: the last stage applies the
  // final norm (hidden = norm(residual + delta)); the others send residual and delta on and
  // return zeros (their logits come from the last stage, see Logits).
  absl::Status BeginStage(const Tensor& input_ids, Tensor& residual, Tensor& delta) const;
  absl::Status EndStage(const Tensor& residual, const Tensor& delta, float eps,
                        Tensor& hidden) const;

  // The stage's decoder layers over one (micro-)batch: residual [rows, hidden] f32, delta
  // undefined (before the model's first layer) or [rows, hidden]; both updated in place.
  using StageLayersFn =
      std::function<absl::Status(const AttentionBatch& batch, Tensor& residual, Tensor& delta)>;
  // One step through this stage: BeginStage, `layers`, EndStage. With pipeline stages and
  // several sequences (and no data-parallel attention) the batch is cut into up to pp_size
  // micro-batches of whole sequences with about equal tokens; stage k sends micro-batch i on
  // asynchronously and goes on with i + 1 while stage k + 1 runs i. hidden (allocated):
  // [num_tokens, hidden] f32 on the last stage, zeros elsewhere. The result equals one batch.
  absl::Status ForwardStage(const Tensor& input_ids, const AttentionBatch& batch, float eps,
                            const StageLayersFn& layers, Tensor& hidden) const;
  // Micro-batches the last ForwardStage call ran (1 without pipelining).
  int last_micro_batches() const { return last_micro_batches_; }

 private:
  // The last stage's logits: lm_head of this rank's vocabulary rows, gathered over tp.
  absl::Status LocalLogits(const Tensor& hidden, Tensor& logits) const;
  mutable int last_micro_batches_ = 1;
};

// Sequences [s0, s1) of `batch` as a batch of their own (rows renumbered from 0); the tensors
// are views of batch's or small copies.
absl::StatusOr<AttentionBatch> SliceAttentionBatch(const AttentionBatch& batch, int s0, int s1);
absl::StatusOr<DecoderEnds> LoadDecoderEnds(const Checkpoint& ckpt, const ModelConfig& config,
                                            const WeightFormat& format, const Shard& shard = {});

}  // namespace tessera
