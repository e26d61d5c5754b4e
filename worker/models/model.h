// Model: one decoder-only language model loaded on one CPU worker, and the registry that builds
// the right implementation for a checkpoint's ModelFamily.
//
// Contract:
// - A Model is built by LoadModel() from an open Checkpoint and its parsed ModelConfig; every
//   weight is read and validated at load time (missing tensors, wrong shapes or dtypes and
//   inconsistent config fields fail with a status naming the tensor or field).
// - KvSpecs() describes the paged KV cache each decoder layer needs; the caller allocates a
//   KvCache from it (worker/kv_cache.h) and builds an AttentionBatch per step.
// - Forward() runs one step over a mixed batch (prefill chunks and decode tokens), writes the new
//   tokens' keys/values into the cache and returns the logits of each sequence's last token.
//
// Implementations: the non-MLA families (Llama/Qwen3 dense, Qwen2/3-MoE, Mixtral, GLM-4.5,
// MiniMax-M2, gpt-oss) in worker/models/{llama,qwen_moe,mixtral,glm4_moe,minimax_m2,gpt_oss}.cc
// built from worker/models/layers.h; DeepSeek-V3 / Kimi K2 (MLA) in worker/models/deepseek_v3.cc.
//
// Thread safety: a Model's weights are immutable after loading; Forward() uses internal scratch
// space, so one Forward() runs at a time per Model (kernels parallelise internally).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/base/tensor.h"
#include "worker/attention_batch.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/kv_cache.h"

namespace tessera {

class Communicator;  // parallel/communicator.h
struct ModelConfig;  // worker/checkpoint/model_config.h

struct ModelLoadOptions {
  // Called after each decoder layer is loaded with (layers_done, num_layers); may be empty.
  std::function<void(int, int)> progress;
  // This rank's slice of the model (DESIGN.md section 4; worker/models/layers.h Shard and
  // docs/sharding.md give the layouts): tensor parallelism splits attention heads, dense MLPs,
  // the embedding and lm_head (vocab-parallel) over tp_size ranks; expert parallelism gives each
  // of ep_size ranks num_experts / ep_size whole routed experts (only those are read from the
  // checkpoint), with ep_size == 1 every expert's FFN is split over the stage instead;
  // data-parallel attention (dp_size > 1, ep_size == tp_size * dp_size) gives each DP rank its
  // own sequences and KV cache, MoE layers dispatching tokens to the experts' owners and back;
  // pipeline parallelism gives stage pp_rank the decoder layers SplitRange(num_layers, pp_size,
  // pp_rank) and only their KV cache. SetLayout fills the ranks from a world rank.
  int tp_rank = 0;
  int tp_size = 1;
  int ep_rank = 0;
  int ep_size = 1;
  int dp_rank = 0;
  int dp_size = 1;
  int pp_rank = 0;
  int pp_size = 1;
  // The instance's world group (required when it has more than one rank; borrowed: it must
  // outlive the model). The model builds its tp / stage / pp sub-groups from it while loading.
  Communicator* comm = nullptr;
  // Used by LoadModelFromDirectory only: kCopied reads the weights into (huge-page backed) owned
  // memory, kMapped uses them in place from the page cache (see worker/checkpoint/checkpoint.h).
  WeightResidency weights = WeightResidency::kCopied;

  // Sets the sizes and this rank's coordinates for world rank `rank` (world = pp * stage,
  // stage = max(tp * dp, ep), tp fastest).
  void SetLayout(int tp, int ep, int dp, int pp, int rank);
};

class Model {
 public:
  virtual ~Model() = default;

  virtual const ModelConfig& config() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t hidden_size() const = 0;
  // One entry per decoder layer, in layer order.
  virtual std::vector<LayerKvSpec> KvSpecs() const = 0;

  // Embedding + every decoder layer + the final norm.
  // input_ids: [num_tokens] i32 (rows ordered as batch.query_start_loc says);
  // hidden (output, allocated by the call): [num_tokens, hidden_size] f32 after the final norm.
  // Writes this step's keys/values into `cache` at batch.slot_mapping.
  virtual absl::Status ForwardHidden(const Tensor& input_ids, const AttentionBatch& batch,
                                     KvCache& cache, Tensor& hidden) = 0;

  // lm_head. hidden: [rows, hidden_size] f32 (rows may be strided);
  // logits (output, allocated by the call): [rows, vocab_size] f32.
  virtual absl::Status ComputeLogits(const Tensor& hidden, Tensor& logits) = 0;

  // Takes part in a step without tokens of its own: a data-parallel rank whose batch is empty
  // must still join the collectives of the others' forward pass (the MoE layers' dispatch and
  // combine, with zero rows). A no-op for models that are not data parallel.
  virtual absl::Status ForwardIdle() { return absl::OkStatus(); }

  // Pipeline micro-batches the last ForwardHidden ran (1 without pipeline stages or with one
  // sequence; see DecoderEnds::ForwardStage).
  virtual int last_micro_batches() const { return 1; }

  // One step: ForwardHidden, then the logits of the rows batch.last_token_rows.
  // logits (output, allocated by the call): [num_seqs, vocab_size] f32.
  absl::Status Forward(const Tensor& input_ids, const AttentionBatch& batch, KvCache& cache,
                       Tensor& logits);
  // Checks what every ForwardHidden needs before it touches memory: input_ids is [num_tokens]
  // for batch.num_tokens, and `cache` has one layer per KvSpecs() entry with exactly that spec.
  // Errors name the layer and both layouts.
  absl::Status ValidateStep(const Tensor& input_ids, const AttentionBatch& batch,
                            const KvCache& cache) const;

  // As Forward, but the logits of every token row: [num_tokens, vocab_size] f32 (tests).
  absl::Status ForwardAllLogits(const Tensor& input_ids, const AttentionBatch& batch,
                                KvCache& cache, Tensor& logits);
};

// Registry (worker/models/registry.cc): an explicit table from ModelFamily to loader functions of
// this signature. The DeepSeek-V3 / Kimi K2 entry calls
//   absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3Model(const Checkpoint&,
//                                                              const ModelConfig&,
//                                                              const ModelLoadOptions&);
// declared in worker/models/deepseek_v3.h (defined by the MLA implementation).
using ModelLoaderFn = absl::StatusOr<std::unique_ptr<Model>> (*)(const Checkpoint&,
                                                                 const ModelConfig&,
                                                                 const ModelLoadOptions&);

// Builds the model for config.family from the checkpoint. Errors name the tensor or config field
// at fault; an unsupported family is UNIMPLEMENTED naming it.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(const Checkpoint& ckpt, const ModelConfig& config,
                                                 const ModelLoadOptions& options = {});

// Tensors of `checkpoint` that no layer read while the model loaded (call after a single-rank
// load: other layouts leave other ranks' shares unread), not counting layers past
// config.num_hidden_layers (DeepSeek-V3's multi-token-prediction heads, which are not served).
// LoadModelFromDirectory logs a warning naming them: they usually mean config.json lacks a
// feature the weights have.
std::vector<std::string> UnknownTensors(const Checkpoint& checkpoint, const ModelConfig& config);

// Opens the checkpoint directory (config.json + *.safetensors) with options.weights residency and
// loads it. The checkpoint stays open for the model's lifetime (with kMapped the model's weights
// are views into its mappings).
struct LoadedModel {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<ModelConfig> config;
  std::unique_ptr<Model> model;
  LoadedModel();
  LoadedModel(LoadedModel&&) noexcept;
  LoadedModel& operator=(LoadedModel&&) noexcept;
  ~LoadedModel();
};
absl::StatusOr<LoadedModel> LoadModelFromDirectory(const std::string& dir,
                                                   const ModelLoadOptions& options = {});

}  // namespace tessera
