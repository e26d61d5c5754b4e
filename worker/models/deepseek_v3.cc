#include "worker/models/deepseek_v3.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/layers.h"

namespace tessera {
namespace {

class DeepseekV3Model : public Model {
 public:
  struct Layer {
    Tensor input_norm;  // [hidden] f32
    Tensor post_norm;   // [hidden] f32
    std::unique_ptr<MlaAttention> attention;
    std::unique_ptr<GatedMlp> mlp;  // layers < first_k_dense_replace
    std::unique_ptr<MoeBlock> moe;  // the others
  };

  const ModelConfig& config() const override { return config_; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t hidden_size() const override { return config_.hidden_size; }
  std::vector<LayerKvSpec> KvSpecs() const override {
    const LayerKvSpec spec{1, static_cast<int>(mla_.latent_dim()),
                           static_cast<int>(mla_.kv_lora_rank), /*v_aliases_k=*/true};
    return std::vector<LayerKvSpec>(layers_.size(), spec);
  }

  absl::Status ForwardHidden(const Tensor& input_ids, const AttentionBatch& batch, KvCache& cache,
                             Tensor& hidden) override;
  absl::Status ComputeLogits(const Tensor& hidden, Tensor& logits) override {
    return ends_.Logits(hidden, logits);
  }
  int last_micro_batches() const override { return ends_.last_micro_batches(); }
  absl::Status ForwardIdle() override { return ForwardIdleMoe(layers_, config_.hidden_size); }

  ModelConfig config_;
  MlaConfig mla_;
  float eps_ = 1e-6f;
  Shard shard_;
  DecoderEnds ends_;  // embedding, final norm, lm_head (vocab-parallel when sharded)
  std::vector<Layer> layers_;
};

absl::Status DeepseekV3Model::ForwardHidden(const Tensor& input_ids, const AttentionBatch& batch,
                                            KvCache& cache, Tensor& hidden) {
  const int64_t h = config_.hidden_size;
  RETURN_IF_ERROR(ValidateStep(input_ids, batch, cache));
  // delta: output of the previous sub-block (undefined before the model's first layer).
  auto run_layers = [&](const AttentionBatch& b, Tensor& residual, Tensor& delta) {
    const int64_t t = residual.dim(0);
    ASSIGN_OR_RETURN(Tensor x, Tensor::Empty({t, h}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor attn_out, Tensor::Empty({t, h}, DType::kF32));
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& layer = layers_[i];
      if (!delta.defined()) {
        RETURN_IF_ERROR(RmsNorm(residual, layer.input_norm, eps_, x));
      } else {
        RETURN_IF_ERROR(AddRmsNorm(residual, delta, layer.input_norm, eps_, x));
      }
      Tensor latent_cache = cache.k_cache(static_cast<int>(i));
      RETURN_IF_ERROR(layer.attention->Forward(x, b, latent_cache, attn_out));
      RETURN_IF_ERROR(AllReduceSum(shard_, shard_.tp_size > 1, attn_out));
      RETURN_IF_ERROR(AddRmsNorm(residual, attn_out, layer.post_norm, eps_, x));
      RETURN_IF_ERROR(FeedForward(shard_, layer.moe.get(), layer.mlp.get(), x, delta));
    }
    return absl::OkStatus();
  };
  return ends_.ForwardStage(input_ids, batch, eps_, run_layers, hidden);
}

absl::Status RequirePositive(const ModelConfig& config, int64_t value, const char* field) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      config.source, ": ", field, " must be > 0 for DeepseekV3ForCausalLM (got ", value, ")"));
}

// `mla` is the full model's MLA config; with tp > 1 this rank keeps heads `heads_part` of
// q_proj / q_b_proj / kv_b_proj (rows) and o_proj (columns); the latent projections are replicated.
absl::StatusOr<MlaWeights> LoadMlaWeights(const Checkpoint& ckpt, const std::string& prefix,
                                          const ModelConfig& config, const MlaConfig& mla,
                                          const WeightFormat& format, const Shard& shard) {
  MlaWeights w;
  const int64_t h = config.hidden_size, heads = mla.num_heads, qk = mla.qk_head_dim();
  const int64_t kvb = mla.qk_nope_head_dim + mla.v_head_dim;
  const bool bias = config.attention_bias;
  const std::string p = prefix + ".";
  const bool split = shard.tp_size > 1;
  const Range hp = SplitRange(heads, shard.tp_size, shard.tp_rank);
  auto rows = [&](int64_t per_head) {
    return split ? LinearSlice::OutRows({hp.begin * per_head, hp.end * per_head})
                 : LinearSlice{};
  };
  if (mla.q_lora_rank == 0) {
    ASSIGN_OR_RETURN(LinearLayer q,
                     LoadLinear(ckpt, p + "q_proj", heads * qk, h, false, format, rows(qk)));
    w.q_proj = q.weight;
  } else {
    ASSIGN_OR_RETURN(LinearLayer qa,
                     LoadLinear(ckpt, p + "q_a_proj", mla.q_lora_rank, h, bias, format));
    w.q_a_proj = qa.weight;
    w.q_a_proj_bias = qa.bias;
    ASSIGN_OR_RETURN(w.q_a_layernorm, LoadNormWeight(ckpt, p + "q_a_layernorm", mla.q_lora_rank));
    ASSIGN_OR_RETURN(LinearLayer qb, LoadLinear(ckpt, p + "q_b_proj", heads * qk,
                                                mla.q_lora_rank, false, format, rows(qk)));
    w.q_b_proj = qb.weight;
  }
  ASSIGN_OR_RETURN(LinearLayer kva,
                   LoadLinear(ckpt, p + "kv_a_proj_with_mqa", mla.latent_dim(), h, bias, format));
  w.kv_a_proj_with_mqa = kva.weight;
  w.kv_a_proj_bias = kva.bias;
  ASSIGN_OR_RETURN(w.kv_a_layernorm, LoadNormWeight(ckpt, p + "kv_a_layernorm", mla.kv_lora_rank));
  ASSIGN_OR_RETURN(LinearLayer kv_b, LoadLinear(ckpt, p + "kv_b_proj", heads * kvb,
                                                mla.kv_lora_rank, false, format, rows(kvb)));
  w.kv_b_proj = kv_b.weight;
  const int64_t vd = mla.v_head_dim;
  ASSIGN_OR_RETURN(
      LinearLayer o,
      LoadLinear(ckpt, p + "o_proj", h, heads * vd, bias && shard.tp_rank == 0, format,
                 split ? LinearSlice::InCols({hp.begin * vd, hp.end * vd}) : LinearSlice{}));
  w.o_proj = o.weight;
  w.o_proj_bias = o.bias;
  return w;
}

MoeSpec DeepseekMoeSpec(const Checkpoint& ckpt, const ModelConfig& config,
                        const std::string& prefix) {
  MoeSpec m;
  m.experts = MoeSpec::Experts::kSeparate;
  m.num_experts = config.num_experts;
  m.hidden_size = config.hidden_size;
  m.moe_intermediate_size = config.moe_intermediate_size;
  m.router.scoring = RouterConfig::Scoring::kSigmoid;
  m.router.top_k = config.num_experts_per_tok;
  m.router.renormalize = config.norm_topk_prob;
  m.router.n_group = config.n_group > 0 ? config.n_group : 1;
  m.router.topk_group = config.topk_group > 0 ? config.topk_group : 1;
  m.router.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);
  m.gate_name = "gate";
  m.correction_bias_name = "gate.e_score_correction_bias";
  // topk_method "noaux_tc" (V3, R1, K2) always ships the bias; older configs may not.
  m.correction_bias =
      config.use_routing_bias || ckpt.Has(absl::StrCat(prefix, ".", m.correction_bias_name));
  if (config.n_shared_experts > 0) {
    m.shared_intermediate_size = config.n_shared_experts * config.moe_intermediate_size;
    m.shared_name = "shared_experts";
  }
  return m;
}

}  // namespace

absl::StatusOr<MlaConfig> MlaConfigFromModelConfig(const ModelConfig& config) {
  RETURN_IF_ERROR(RequirePositive(config, config.hidden_size, "hidden_size"));
  RETURN_IF_ERROR(RequirePositive(config, config.num_attention_heads, "num_attention_heads"));
  RETURN_IF_ERROR(RequirePositive(config, config.kv_lora_rank, "kv_lora_rank"));
  RETURN_IF_ERROR(RequirePositive(config, config.qk_nope_head_dim, "qk_nope_head_dim"));
  RETURN_IF_ERROR(RequirePositive(config, config.qk_rope_head_dim, "qk_rope_head_dim"));
  RETURN_IF_ERROR(RequirePositive(config, config.v_head_dim, "v_head_dim"));
  if (config.q_lora_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.source, ": q_lora_rank must be >= 0 or null"));
  }
  MlaConfig m;
  m.hidden_size = config.hidden_size;
  m.num_heads = config.num_attention_heads;
  m.q_lora_rank = config.q_lora_rank;
  m.kv_lora_rank = config.kv_lora_rank;
  m.qk_nope_head_dim = config.qk_nope_head_dim;
  m.qk_rope_head_dim = config.qk_rope_head_dim;
  m.v_head_dim = config.v_head_dim;
  m.rms_norm_eps = static_cast<float>(config.rms_norm_eps);
  const int rope_dim = static_cast<int>(config.qk_rope_head_dim);
  ASSIGN_OR_RETURN(m.rope, MakeRopeConfig(config, rope_dim, rope_dim));
  m.rope_interleave = config.rope_interleaved;
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3Model(const Checkpoint& ckpt,
                                                           const ModelConfig& config,
                                                           const ModelLoadOptions& options) {
  return LoadDeepseekV3ModelWithOptions(ckpt, config, options, DeepseekV3Options{});
}

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3ModelWithOptions(
    const Checkpoint& ckpt, const ModelConfig& config, const ModelLoadOptions& options,
    const DeepseekV3Options& ds_options) {
  RETURN_IF_ERROR(RequirePositive(config, config.vocab_size, "vocab_size"));
  RETURN_IF_ERROR(RequirePositive(config, config.num_hidden_layers, "num_hidden_layers"));
  ASSIGN_OR_RETURN(MlaConfig mla, MlaConfigFromModelConfig(config));
  auto model = std::make_unique<DeepseekV3Model>();
  model->config_ = config;
  model->mla_ = mla;
  model->eps_ = static_cast<float>(config.rms_norm_eps);
  const int64_t h = config.hidden_size;
  const WeightFormat format = WeightFormatFromConfig(config);

  ASSIGN_OR_RETURN(model->shard_,
                   Shard::Create(options.tp_rank, options.tp_size, options.ep_rank,
                                 options.ep_size, options.dp_rank, options.dp_size,
                                 options.pp_rank, options.pp_size, options.comm));
  const Shard& shard = model->shard_;
  ASSIGN_OR_RETURN(model->ends_, LoadDecoderEnds(ckpt, config, format, shard));

  // This rank's heads (all of them without tensor parallelism).
  MlaConfig local_mla = mla;
  if (shard.tp_size > 1) {
    RETURN_IF_ERROR(CheckDivisible(mla.num_heads, shard.tp_size, "num_attention_heads", "tp"));
    local_mla.num_heads = mla.num_heads / shard.tp_size;
  }
  // One RoPE table for all layers (YaRN over qk_rope_head_dim).
  ASSIGN_OR_RETURN(RopeCache rope_cache, RopeCache::Create(MlaAttention::RopeConfigFor(mla)));
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
    DeepseekV3Model::Layer& layer = model->layers_[i - stage.begin];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ASSIGN_OR_RETURN(layer.input_norm, LoadNormWeight(ckpt, p + "input_layernorm", h));
    ASSIGN_OR_RETURN(layer.post_norm, LoadNormWeight(ckpt, p + "post_attention_layernorm", h));
    const std::string attn_prefix = p + "self_attn";
    ASSIGN_OR_RETURN(MlaWeights weights,
                     LoadMlaWeights(ckpt, attn_prefix, config, mla, format, shard));
    ASSIGN_OR_RETURN(MlaAttention attn, MlaAttention::Create(local_mla, std::move(weights),
                                                             attn_prefix, ds_options.mla, rope));
    layer.attention = std::make_unique<MlaAttention>(std::move(attn));
    if (config.IsMoeLayer(i)) {
      RETURN_IF_ERROR(RequirePositive(config, config.num_experts, "n_routed_experts"));
      RETURN_IF_ERROR(
          RequirePositive(config, config.moe_intermediate_size, "moe_intermediate_size"));
      const std::string mlp_prefix = p + "mlp";
      ASSIGN_OR_RETURN(
          MoeBlock moe,
          MoeBlock::Load(ckpt, mlp_prefix, DeepseekMoeSpec(ckpt, config, mlp_prefix), format,
                         shard));
      layer.moe = std::make_unique<MoeBlock>(std::move(moe));
    } else {
      RETURN_IF_ERROR(RequirePositive(config, config.intermediate_size, "intermediate_size"));
      ASSIGN_OR_RETURN(GatedMlp mlp,
                       GatedMlp::Load(ckpt, p + "mlp", h, config.intermediate_size, format, {},
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
