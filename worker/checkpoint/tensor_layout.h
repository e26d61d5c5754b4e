// TensorLayout: every tensor a Hugging Face checkpoint of a ModelConfig holds (name, shape,
// stored dtype), and how tensor, expert and pipeline parallelism divide it between ranks.
//
// This is the single place where tessera accounts for weight bytes: the sharding planner
// (coordinator/cluster/planner.h) sums it per rank, and a model loader asks RankTensors() which
// tensors, and which slice of each, a rank must read (Checkpoint::ReadSlice takes the same
// dim / begin / end), so experts a rank does not own are never read.
//
// Predicted from config.json alone (no weights needed):
//   - dtypes: torch_dtype for unquantised tensors; fp8 block quantisation (quant_method "fp8":
//     DeepSeek-V3/R1, Kimi K2, MiniMax-M2, Qwen3-FP8) stores every projection of attention, dense
//     MLP, shared and routed experts as F8_E4M3 plus "<name>_scale_inv" F32
//     [ceil(out / block_n), ceil(in / block_k)]; embeddings, lm_head, routers, norms, biases and
//     modules_to_not_convert stay in torch_dtype; e_score_correction_bias is F32.
//   - gpt-oss MXFP4 (quant_method "mxfp4"): stacked experts as *_blocks U8 [E, out, in / 32, 16]
//     and *_scales U8 [E, out, in / 32] (4.25 bits per weight) plus *_bias BF16 [E, out].
//   - MTP layers (num_nextn_predict_layers; DeepSeek-V3/R1, GLM-4.5) are listed with placement
//     kMtp after the decoder layers; they are not run for plain decoding and RankTensors() skips
//     them unless asked.
//
// Parallel layout (DESIGN.md section 4, docs/sharding.md for what the model loader does): TP splits
// attention heads (q, o, sinks; KV heads split, or one KV head per rank replicated when
// num_kv_heads < tp), MLA's q_b_proj / kv_b_proj by heads with the latent down-projections
// replicated, dense MLPs column / row parallel, embedding and lm_head vocab-parallel
// (ceil(vocab / tp) rows per rank); norms and routers replicated; row-parallel biases (o_proj,
// expert down biases when split) on TP rank 0 only; shared experts split over the MoE group;
// routed experts partitioned over EP in contiguous ranges (EP rank r owns experts
// [r * E / ep, (r + 1) * E / ep)), or with ep == 1 each expert's FFN split over TP like a dense
// MLP; pipeline stages own contiguous layer ranges (PipelineStageLayers), the embedding on the
// first stage, final norm and lm_head (and the tied embedding) on the last.
//
// Thread safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/base/dtype.h"
#include "parallel/mesh.h"
#include "worker/checkpoint/model_config.h"

namespace tessera {

// Which pipeline stage holds a tensor.
enum class TensorPlacement {
  kEmbedding,  // model.embed_tokens: first stage (and the last when word embeddings are tied)
  kLayer,      // decoder layer `layer`: the stage whose layer range holds it
  kHead,       // model.norm, lm_head: last stage
  kMtp,        // multi-token-prediction layer: last stage, loaded only on request
};

// How a tensor is divided between the ranks of its stage.
enum class TensorSplit {
  kReplicated,     // every rank holds it whole
  kTensorParallel, // dim split_dim (extent `extent` of the weight) split evenly over TP in
                   // whole units of `unit` elements (a head, or 1 for MLP rows / columns)
  kKvHeads,        // like kTensorParallel over num_kv_heads heads of `unit`; when
                   // num_kv_heads < tp, TP rank r holds head r * num_kv_heads / tp whole
  kVocab,          // dim 0 split into ceil(extent / tp) rows per TP rank (last rank may hold fewer)
  kFirstTpRank,    // held whole by TP rank 0 only (row-parallel biases, added once)
  kMoeGroup,       // shared experts: like kTensorParallel, but over the whole MoE group (the
                   // ep ranks when ep > 1, else the tp ranks)
  kExpert,         // one routed expert's tensor: with ep > 1 held whole by the EP rank owning
                   // `expert`; with ep == 1 split over TP as `expert_tp` says
  kExpertStacked,  // dim 0 indexes the routed experts: with ep > 1 each EP rank reads its
                   // contiguous range; with ep == 1 split over TP as `expert_tp` says
};

struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kBF16;
  TensorPlacement placement = TensorPlacement::kLayer;
  int layer = -1;   // checkpoint layer index for kLayer / kMtp (MTP layers follow the decoder)
  int expert = -1;  // kExpert
  TensorSplit split = TensorSplit::kReplicated;
  // Routed experts with ep == 1 (every rank holds every expert): kTensorParallel along
  // split_dim (gate/up rows, down columns, as a dense MLP), kFirstTpRank (down biases) or
  // kReplicated.
  TensorSplit expert_tp = TensorSplit::kReplicated;
  int split_dim = 0;
  // The split weight's extent along split_dim and its unit (head size); for an fp8 scale tensor
  // these describe the weight it scales, and `block` is the weight elements one scale covers
  // along split_dim (1 for every other tensor).
  int64_t extent = 0;
  int64_t unit = 1;
  int64_t block = 1;
  bool is_scale = false;  // fp8 weight_scale_inv or MXFP4 *_scales (not parameters)
  int params_per_element = 1;  // 2 for MXFP4 *_blocks (two 4-bit weights per byte)

  int64_t num_elements() const;
  int64_t nbytes() const;  // num_elements() * dtype size (MXFP4 blocks are U8 of two weights)
};

struct TensorLayoutOptions {
  bool include_mtp = true;  // list MTP layers (placement kMtp)
};

// Every tensor of the checkpoint, in checkpoint order (embedding, layers, MTP, head). The config
// must have passed ValidateModelConfig.
std::vector<CheckpointTensor> CheckpointTensors(const ModelConfig& config,
                                                const TensorLayoutOptions& options = {});

// Parameters of the listed tensors: every stored weight element counts as one parameter
// (MXFP4: two per byte of *_blocks); fp8 and MXFP4 scales are not parameters.
int64_t CountParameters(const std::vector<CheckpointTensor>& tensors);
// Whether checkpoint layer `layer` (decoder or MTP) has routed experts.
bool LayerHasExperts(const ModelConfig& config, int layer);

// Decoder layers [begin, end) of pipeline stage pp_rank: stage s starts at s * L / pp (floor),
// so stages differ by at most one layer.
struct LayerRange {
  int begin = 0;
  int end = 0;
  bool contains(int layer) const { return layer >= begin && layer < end; }
};
LayerRange PipelineStageLayers(int num_layers, int pp, int pp_rank);

// The part of one tensor a rank reads: [begin, end) along dim, or the whole tensor (dim -1).
struct TensorSlice {
  const CheckpointTensor* tensor = nullptr;
  int dim = -1;
  int64_t begin = 0;
  int64_t end = 0;
  std::vector<int64_t> shape;  // the slice's shape
  int64_t nbytes = 0;
};

// Contiguous byte runs of a slice relative to the tensor's first data byte (row-major), merged
// where adjacent: one run for dim 0 (or the whole tensor), one per outer row otherwise.
struct ByteRange {
  int64_t offset = 0;
  int64_t size = 0;
};
std::vector<ByteRange> SliceByteRanges(const TensorSlice& slice);

struct RankTensorOptions {
  bool load_mtp = false;
};

// The slice of `tensor` that rank `coord` holds; false when it holds none of it (an expert it
// does not own, another stage's layer, an MTP layer not asked for).
bool RankSlice(const ModelConfig& config, const CheckpointTensor& tensor, const MeshShape& shape,
               const MeshCoord& coord, const RankTensorOptions& options, TensorSlice* slice);

// The tensors (and slices) rank `coord` of `shape` holds; tensors it does not hold (unowned
// experts, other stages' layers) are absent. `tensors` must outlive the result. The mesh shape
// must be valid for the config (see ValidateTensorSplits).
std::vector<TensorSlice> RankTensors(const ModelConfig& config,
                                     const std::vector<CheckpointTensor>& tensors,
                                     const MeshShape& shape, const MeshCoord& coord,
                                     const RankTensorOptions& options = {});

// Checks that every tensor splits over the mesh: TP splits whole units (heads) evenly, KV heads
// divide or are divided by tp, fp8 scale blocks are not cut between ranks, experts divide over
// ep. Returns one message per violation (deduplicated across layers: "layers 3-60"); empty = OK.
std::vector<std::string> ValidateTensorSplits(const ModelConfig& config,
                                              const std::vector<CheckpointTensor>& tensors,
                                              const MeshShape& shape);

}  // namespace tessera
