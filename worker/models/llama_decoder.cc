#include "worker/models/llama_decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"

namespace tessera {
namespace {

class DecoderModel : public Model {
 public:
  struct Layer {
    Tensor input_norm;  // [hidden] f32
    Tensor post_norm;   // [hidden] f32
    std::unique_ptr<GqaAttention> attention;
    std::unique_ptr<GatedMlp> mlp;
    std::unique_ptr<MoeBlock> moe;
  };

  const ModelConfig& config() const override { return config_; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t hidden_size() const override { return config_.hidden_size; }
  std::vector<LayerKvSpec> KvSpecs() const override {
    std::vector<LayerKvSpec> specs;
    for (const Layer& l : layers_) specs.push_back(l.attention->kv_spec());
    return specs;
  }

  absl::Status ForwardHidden(const Tensor& input_ids, const AttentionBatch& batch,
                             KvCache& cache, Tensor& hidden) override;
  absl::Status ComputeLogits(const Tensor& hidden, Tensor& logits) override {
    return ends_.Logits(hidden, logits);
  }
  int last_micro_batches() const override { return ends_.last_micro_batches(); }
  absl::Status ForwardIdle() override { return ForwardIdleMoe(layers_, config_.hidden_size); }

  ModelConfig config_;
  float eps_ = 1e-6f;
  Shard shard_;
  DecoderEnds ends_;  // embedding, final norm, lm_head (vocab-parallel when sharded)
  std::vector<Layer> layers_;
};

absl::Status DecoderModel::ForwardHidden(const Tensor& input_ids, const AttentionBatch& batch,
                                         KvCache& cache, Tensor& hidden) {
  const int64_t h = config_.hidden_size;
  RETURN_IF_ERROR(ValidateStep(input_ids, batch, cache));
  // delta: output of the previous sub-block (undefined before the model's first layer).
  auto run_layers = [&](const AttentionBatch& b, Tensor& residual, Tensor& delta) {
    ASSIGN_OR_RETURN(Tensor x, Tensor::Empty({residual.dim(0), h}, DType::kF32));
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& layer = layers_[i];
      if (!delta.defined()) {
        RETURN_IF_ERROR(RmsNorm(residual, layer.input_norm, eps_, x));
      } else {
        RETURN_IF_ERROR(AddRmsNorm(residual, delta, layer.input_norm, eps_, x));
      }
      Tensor k_cache = cache.k_cache(static_cast<int>(i));
      Tensor v_cache = cache.v_cache(static_cast<int>(i));
      RETURN_IF_ERROR(layer.attention->Forward(x, b, k_cache, v_cache, delta));
      RETURN_IF_ERROR(AllReduceSum(shard_, layer.attention->partial(), delta));
      RETURN_IF_ERROR(AddRmsNorm(residual, delta, layer.post_norm, eps_, x));
      RETURN_IF_ERROR(FeedForward(shard_, layer.moe.get(), layer.mlp.get(), x, delta));
    }
    return absl::OkStatus();
  };
  return ends_.ForwardStage(input_ids, batch, eps_, run_layers, hidden);
}

}  // namespace

AttentionSpec BaseAttentionSpec(const ModelConfig& config, int layer) {
  AttentionSpec a;
  a.hidden_size = config.hidden_size;
  a.num_heads = config.num_attention_heads;
  a.num_kv_heads = config.num_key_value_heads > 0 ? config.num_key_value_heads
                                                  : config.num_attention_heads;
  a.head_dim = static_cast<int>(config.head_dim);
  a.rms_norm_eps = static_cast<float>(config.rms_norm_eps);
  a.sliding_window =
      config.IsSlidingLayer(layer) ? static_cast<int>(config.sliding_window) : 0;
  return a;
}

int64_t ExpertIntermediateSize(const ModelConfig& config) {
  return config.moe_intermediate_size > 0 ? config.moe_intermediate_size
                                          : config.intermediate_size;
}

absl::StatusOr<std::unique_ptr<Model>> LoadDecoderModel(const Checkpoint& ckpt,
                                                        const ModelConfig& config,
                                                        const DecoderSpec& spec,
                                                        const ModelLoadOptions& options) {
  if (config.vocab_size <= 0 || config.hidden_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(config.source,
                                                   ": vocab_size and hidden_size must be > 0"));
  }
  if (static_cast<int>(spec.layers.size()) != config.num_hidden_layers) {
    return absl::InternalError("DecoderSpec layer count differs from num_hidden_layers");
  }
  auto model = std::make_unique<DecoderModel>();
  model->config_ = config;
  model->eps_ = static_cast<float>(config.rms_norm_eps);
  const int64_t h = config.hidden_size;
  const WeightFormat format = WeightFormatFromConfig(config);

  ASSIGN_OR_RETURN(model->shard_,
                   Shard::Create(options.tp_rank, options.tp_size, options.ep_rank,
                                 options.ep_size, options.dp_rank, options.dp_size,
                                 options.pp_rank, options.pp_size, options.comm));
  const Shard& shard = model->shard_;
  ASSIGN_OR_RETURN(model->ends_, LoadDecoderEnds(ckpt, config, format, shard));

  ASSIGN_OR_RETURN(RopeCache rope_cache, RopeCache::Create(spec.rope));
  auto rope = std::make_shared<const RopeCache>(std::move(rope_cache));

  const int n = config.num_hidden_layers;
  if (shard.pp_size > n) {
    return absl::InvalidArgumentError(absl::StrCat(config.source, ": num_hidden_layers (", n,
                                                   ") is smaller than pp ", shard.pp_size));
  }
  // This pipeline stage's layers (all of them without pp); layers_[i - stage.begin].
  const Range stage = shard.StageLayers(n);
  model->layers_.resize(stage.size());
  for (int i = static_cast<int>(stage.begin); i < stage.end; ++i) {
    const DecoderLayerSpec& ls = spec.layers[i];
    DecoderModel::Layer& layer = model->layers_[i - stage.begin];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ASSIGN_OR_RETURN(layer.input_norm, LoadNormWeight(ckpt, p + "input_layernorm", h));
    ASSIGN_OR_RETURN(layer.post_norm, LoadNormWeight(ckpt, p + "post_attention_layernorm", h));
    ASSIGN_OR_RETURN(GqaAttention attn,
                     GqaAttention::Load(ckpt, p + "self_attn", ls.attention, rope, format,
                                        shard));
    layer.attention = std::make_unique<GqaAttention>(std::move(attn));
    if (ls.moe) {
      ASSIGN_OR_RETURN(MoeBlock moe,
                       MoeBlock::Load(ckpt, p + ls.mlp_prefix, ls.moe_spec, format, shard));
      layer.moe = std::make_unique<MoeBlock>(std::move(moe));
    } else {
      if (ls.dense_intermediate_size <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(config.source,
                                                       ": intermediate_size must be > 0"));
      }
      MlpNames names;
      names.bias = ls.dense_mlp_bias;
      ASSIGN_OR_RETURN(GatedMlp mlp, GatedMlp::Load(ckpt, p + ls.mlp_prefix, h,
                                                    ls.dense_intermediate_size, format, names,
                                                    shard.tp_size, shard.tp_rank));
      layer.mlp = std::make_unique<GatedMlp>(std::move(mlp));
    }
    if (options.progress) {
      options.progress(static_cast<int>(i + 1 - stage.begin), static_cast<int>(stage.size()));
    }
  }
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace tessera
