#include "worker/models/model.h"

#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/layers.h"

namespace tessera {

void ModelLoadOptions::SetLayout(int tp, int ep, int dp, int pp, int rank) {
  tp_size = tp;
  ep_size = ep;
  dp_size = dp;
  pp_size = pp;
  const ShardCoords c = ShardCoordsOf(tp, ep, dp, pp, rank);
  tp_rank = c.tp_rank;
  ep_rank = c.ep_rank;
  dp_rank = c.dp_rank;
  pp_rank = c.pp_rank;
}

absl::Status Model::Forward(const Tensor& input_ids, const AttentionBatch& batch, KvCache& cache,
                            Tensor& logits) {
  Tensor hidden;
  RETURN_IF_ERROR(ForwardHidden(input_ids, batch, cache, hidden));
  const int64_t h = hidden.dim(1);
  const int num_seqs = batch.num_seqs;
  if (!batch.last_token_rows.defined() || batch.last_token_rows.numel() != num_seqs ||
      batch.last_token_rows.dtype() != DType::kI32) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: last_token_rows must be [num_seqs=", num_seqs, "] i32"));
  }
  ASSIGN_OR_RETURN(Tensor last, Tensor::Empty({num_seqs, h}, DType::kF32));
  const int32_t* rows = batch.last_token_rows.data<int32_t>();
  for (int s = 0; s < num_seqs; ++s) {
    if (rows[s] < 0 || rows[s] >= hidden.dim(0)) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: last_token_rows[", s, "] = ",
                                                     rows[s], " is out of range"));
    }
    std::memcpy(last.data<float>() + s * h, hidden.data<float>() + rows[s] * h,
                h * sizeof(float));
  }
  return ComputeLogits(last, logits);
}

absl::Status Model::ValidateStep(const Tensor& input_ids, const AttentionBatch& batch,
                                 const KvCache& cache) const {
  if (input_ids.numel() != batch.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: input_ids has ", input_ids.numel(),
                                                   " tokens but the batch has ",
                                                   batch.num_tokens));
  }
  const std::vector<LayerKvSpec> want = KvSpecs();
  if (cache.num_layers() != static_cast<int>(want.size())) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: KV cache has ", cache.num_layers(),
                                                   " layers, model has ", want.size()));
  }
  for (int i = 0; i < cache.num_layers(); ++i) {
    const LayerKvSpec& s = cache.spec(i);
    const LayerKvSpec& w = want[i];
    if (s.num_kv_heads != w.num_kv_heads || s.k_dim != w.k_dim || s.v_dim != w.v_dim ||
        s.v_aliases_k != w.v_aliases_k) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Forward: KV cache layer ", i, " stores ", s.num_kv_heads, " heads of k ", s.k_dim,
          " / v ", s.v_dim, s.v_aliases_k ? " (aliased)" : "", " per token; the model needs ",
          w.num_kv_heads, " heads of k ", w.k_dim, " / v ", w.v_dim,
          w.v_aliases_k ? " (aliased)" : ""));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::ForwardAllLogits(const Tensor& input_ids, const AttentionBatch& batch,
                                     KvCache& cache, Tensor& logits) {
  Tensor hidden;
  RETURN_IF_ERROR(ForwardHidden(input_ids, batch, cache, hidden));
  return ComputeLogits(hidden, logits);
}

LoadedModel::LoadedModel() = default;
LoadedModel::LoadedModel(LoadedModel&&) noexcept = default;
LoadedModel& LoadedModel::operator=(LoadedModel&&) noexcept = default;
LoadedModel::~LoadedModel() {
  // The model holds views into the checkpoint's mappings: destroy it first.
  model.reset();
}

std::vector<std::string> UnknownTensors(const Checkpoint& checkpoint, const ModelConfig& config) {
  std::vector<std::string> unknown;
  for (std::string& name : checkpoint.UnusedTensorNames()) {
    // Layers past num_hidden_layers are DeepSeek-V3's multi-token-prediction heads: not served.
    int layer = -1;
    if (absl::StartsWith(name, "model.layers.") &&
        absl::SimpleAtoi(absl::string_view(name).substr(13, name.find('.', 13) - 13), &layer) &&
        layer >= config.num_hidden_layers) {
      continue;
    }
    unknown.push_back(std::move(name));
  }
  return unknown;
}

namespace {

void WarnAboutUnusedTensors(const Checkpoint& checkpoint, const ModelConfig& config) {
  const std::vector<std::string> unknown = UnknownTensors(checkpoint, config);
  if (unknown.empty()) return;
  std::string examples;
  for (size_t i = 0; i < unknown.size() && i < 4; ++i) {
    absl::StrAppend(&examples, i ? ", " : "", unknown[i]);
  }
  LOG(WARNING) << "checkpoint " << checkpoint.dir() << ": " << unknown.size()
               << " tensor(s) are not used by " << config.architecture << " (" << examples
               << (unknown.size() > 4 ? ", ..." : "")
               << "). If config.json leaves out a feature these weights have (mlp_bias, "
                  "attention_bias, qk norms, ...), the outputs will be wrong: check the config.";
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModelFromDirectory(const std::string& dir,
                                                   const ModelLoadOptions& options) {
  LoadedModel loaded;
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  RETURN_IF_ERROR(ValidateModelConfig(config));
  loaded.config = std::make_unique<ModelConfig>(std::move(config));
  ASSIGN_OR_RETURN(loaded.checkpoint, Checkpoint::Open(dir, options.weights));
  ASSIGN_OR_RETURN(loaded.model, LoadModel(*loaded.checkpoint, *loaded.config, options));
  if (options.tp_size * options.ep_size * options.dp_size * options.pp_size == 1) {
    WarnAboutUnusedTensors(*loaded.checkpoint, *loaded.config);
  }
  return loaded;
}

}  // namespace tessera
