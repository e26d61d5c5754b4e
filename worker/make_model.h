// `tessera make-model`: deterministic random-weight checkpoints in the exact Hugging Face layout.
//
// MakeModel() writes config.json, generation_config.json and safetensors (sharded with a
// model.safetensors.index.json above 2 GB) for one of the supported architectures, with the tensor
// names, shapes and dtypes of that family's Hugging Face checkpoints. The weights are random but
// deterministic for a seed: every element is a pure function of (seed, tensor name, element
// index), so the f32, bf16, fp8 and mxfp4 checkpoints of one seed hold the same values up to
// rounding. mxfp4 (gpt-oss only) writes the release format: routed experts as MXFP4
// *_blocks / *_scales (the values of the bf16 stacked tensors, transposed and quantised with
// per-32 E8M0 scales), everything else bf16.
// Tensors are generated and written in chunks; memory use does not grow with the model.
//
// The pipeline is: a config (a preset, or a real config.json scaled down) -> PlanTensors(config)
// -> streamed writes. Every function is reentrant; nothing here keeps global state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "nlohmann/json.hpp"

namespace tessera {

// The architectures make-model knows (the --arch spellings).
const std::vector<std::string>& MakeModelArchitectures();

struct MakeModelOptions {
  std::string arch;          // one of MakeModelArchitectures(); may be empty with from_config
  std::string out_dir;
  std::string preset = "tiny";  // tiny | small | bench
  uint64_t seed = 0;
  std::string dtype = "bf16";   // f32 | bf16 | fp8 | mxfp4 (gpt_oss only)
  std::string tokenizer_dir;    // optional: copy tokenizer files, take vocab/bos/eos from them
  int64_t tokenizer_vocab = 0;  // vocab size for a SentencePiece-only tokenizer dir
  std::string from_config;      // optional: a real config.json to scale down
  int64_t layers = 0;           // with from_config (0 = keep)
  int64_t experts = 0;          // with from_config (0 = keep)
  int64_t hidden = 0;           // with from_config (0 = keep)
  bool force = false;           // write into an existing non-empty out_dir
  bool progress = false;        // progress lines on stderr
  int64_t max_shard_bytes = int64_t{2} << 30;  // one file when the total is at most this
};

struct MakeModelResult {
  std::string out_dir;
  std::string arch;
  int64_t num_parameters = 0;  // elements of the model's weights (fp8 scales not counted)
  int64_t bytes = 0;           // bytes of tensor data written (scales included)
  std::vector<std::string> files;  // file names written in out_dir
};

// One tensor of the checkpoint.
struct PlannedTensor {
  enum class Init : uint8_t {
    kNormal,  // N(0, scale^2)-like
    kNorm,    // 1 + N(0, scale^2) (norm weights)
  };
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kBF16;
  Init init = Init::kNormal;
  float scale = 0.02f;
  bool fp8_quantized = false;  // stored F8_E4M3, followed by "<name>_scale_inv"
  // MXFP4 expert blocks (gpt-oss release): stored U8 [E, out, in / 32, 16] and followed by their
  // U8 E8M0 scales [E, out, in / 32]. The values are those of the bf16 stacked tensor
  // `mx_source` (shape [E, in, out], x @ W layout, its name seeds the values) transposed per
  // expert; `scale` is that tensor's.
  bool mxfp4_quantized = false;
  std::string mx_source;
};

// The config.json a run would write (preset or scaled real config, tokenizer not applied).
absl::StatusOr<nlohmann::json> BuildMakeModelConfig(const MakeModelOptions& options);

// The tensors of the checkpoint for `config` (a config.json as written by make-model or a real
// one) stored as `dtype`, in write order. fp8 weights are followed by their F32 scale_inv tensor.
// A gpt-oss config whose quantization_config has quant_method "mxfp4" gets the release's MXFP4
// experts (blocks followed by scales; `dtype` must then be bf16).
absl::StatusOr<std::vector<PlannedTensor>> PlanTensors(const nlohmann::json& config,
                                                       DType dtype);

// Deterministic f32 value of element `index` of `tensor` for `seed` (before dtype rounding): a
// function of (seed, tensor.name, index, tensor.init, tensor.scale) only.
float MakeModelValue(uint64_t seed, const PlannedTensor& tensor, int64_t index);

// The E8M0 scale and e2m1 codes make-model stores for 32 consecutive values (one MXFP4 block):
// shared exponent floor(log2(amax)) - 2 (OCP MX v1.0 / triton's quantiser), biased by 127 and
// clamped to [0, 254]; each value / 2^(scale - 127) rounded to the nearest e2m1 (ties to even,
// saturating at +-6). codes[j] in 0..15 (bit 3 sign).
uint8_t QuantizeMxfp4Block(const float* values, uint8_t* codes);

// Writes the checkpoint. Refuses a non-empty out_dir unless options.force.
absl::StatusOr<MakeModelResult> MakeModel(const MakeModelOptions& options);

// The `tessera make-model` subcommand (argv[0] is "make-model").
int RunMakeModel(int argc, char** argv);

}  // namespace tessera
