// The model registry: an explicit table from ModelFamily to loader (no static registrars, so
// linking from a static library is reliable).
#include "absl/strings/str_cat.h"
#include "worker/checkpoint/model_config.h"
#include "worker/models/deepseek_v3.h"
#include "worker/models/llama_decoder.h"
#include "worker/models/model.h"

namespace tessera {
namespace {

ModelLoaderFn LoaderFor(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama:
    case ModelFamily::kQwen3:
      return &LoadLlamaModel;
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kQwen3Moe:
      return &LoadQwenMoeModel;
    case ModelFamily::kMixtral:
      return &LoadMixtralModel;
    case ModelFamily::kDeepseekV3:
      return &LoadDeepseekV3Model;
    case ModelFamily::kGlm4Moe:
      return &LoadGlm4MoeModel;
    case ModelFamily::kMiniMaxM2:
      return &LoadMiniMaxM2Model;
    case ModelFamily::kGptOss:
      return &LoadGptOssModel;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const Checkpoint& ckpt, const ModelConfig& config,
                                                 const ModelLoadOptions& options) {
  ModelLoaderFn loader = LoaderFor(config.family);
  if (loader == nullptr) {
    return absl::UnimplementedError(absl::StrCat(config.source, ": model family ",
                                                 ModelFamilyName(config.family),
                                                 " has no loader"));
  }
  return loader(ckpt, config, options);
}

}  // namespace tessera
