// Sharding planner: chooses (or checks) the parallel layout of a model over a set of equal
// devices and predicts, per rank, the exact weight bytes it holds and the KV cache it can keep —
// from config.json alone, before any weight is read.
//
// Contract:
//   - Weight bytes come from worker/checkpoint/tensor_layout.h (the same per-tensor accounting
//     the model loader uses): every tensor the rank holds under the layout, in its stored dtype
//     (fp8 + f32 block scales, MXFP4 blocks + scales, bf16 elsewhere).
//   - Usable memory = device_memory * (1 - overhead_fraction); KV bytes = usable - weights.
//   - KV per token per rank: GQA 2 * max(1, kv_heads / tp) * head_dim * size(kv_dtype) per layer of
//     the rank's stage, MLA (kv_lora_rank + qk_rope_head_dim) * size(kv_dtype) (replicated on every
//     TP rank); sliding-window layers hold at most the window (+ one block) per sequence.
//   - A DP replica (the tp x pp ranks sharing a dp_rank) holds its own sequences: max context is
//     one sequence on one replica; max concurrent sequences is per replica times dp.
//   - Layout policy when tp / dp / pp / ep are not all given (docs/planner.md): no pipeline
//     parallelism unless no layout without it fits the weights; then the smallest TP, with DP
//     filling the remaining devices and EP = tp * dp for MoE (experts replicated, ep = 1, only as
//     a fallback). The first such layout whose weights fit and that holds one sequence of
//     max_model_len (default max_position_embeddings) wins; if none holds one, the one holding
//     the longest sequence (max_model_len is then lowered to it unless given).
//   - Every violation is reported (InvalidArgument, one line each), never just the first.
//
// Thread safety: pure functions over plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/dtype.h"
#include "parallel/mesh.h"
#include "worker/checkpoint/model_config.h"
#include "worker/checkpoint/tensor_layout.h"

namespace tessera {

struct PlanOptions {
  int devices = 1;
  int64_t device_memory_bytes = 0;
  // Unset: chosen by the layout policy.
  std::optional<int> tp, dp, pp, ep;
  // Unset: the weights' (unquantised) dtype, torch_dtype in config.json.
  std::optional<DType> kv_dtype;
  // Fraction of each device kept for activations, workspaces, CUDA graphs and the allocator.
  double overhead_fraction = 0.10;
  // 0: max_position_embeddings, lowered to what one replica's KV cache holds.
  int64_t max_model_len = 0;
  bool load_mtp = false;  // also load the MTP layers (speculative decoding)
  int block_size = 16;    // KV cache block (tokens); allocation rounds up to whole blocks
};

struct RankPlan {
  MeshCoord coord;
  LayerRange layers;  // decoder layers of the rank's stage
  bool has_embedding = false;
  bool has_head = false;
  int experts_per_layer = 0;  // routed experts held per MoE layer
  int64_t weight_bytes = 0;
  int64_t num_tensors = 0;  // tensors (or slices of them) read from the checkpoint
  int64_t kv_bytes_per_token = 0;          // all attention layers of the stage
  int64_t kv_bytes_per_token_sliding = 0;  // the part in sliding-window layers
  int64_t usable_bytes = 0;                // device memory minus the overhead reserve
  int64_t kv_bytes = 0;                    // usable - weights (negative: does not fit)
};

struct ShardingPlan {
  std::string model;         // config source
  std::string architecture;
  MeshShape shape;
  bool auto_layout = false;  // some of tp / dp / pp / ep were chosen by the policy
  std::string weight_format;  // "bf16", "fp8 e4m3 (128x128 blocks) + bf16", "mxfp4 experts + bf16"
  DType kv_dtype = DType::kBF16;
  int block_size = 16;
  int64_t device_memory_bytes = 0;
  double overhead_fraction = 0;
  int64_t max_position_embeddings = 0;
  int64_t max_model_len = 0;
  bool max_model_len_lowered = false;  // defaulted below max_position_embeddings to fit the KV
  bool load_mtp = false;

  int64_t num_parameters = 0;         // model parameters (MTP excluded)
  int64_t mtp_parameters = 0;         // MTP layers in the checkpoint
  int64_t checkpoint_bytes = 0;       // every tensor of the checkpoint (MTP included)
  int64_t model_weight_bytes = 0;     // tensors loaded for decoding (MTP only with load_mtp)
  std::vector<RankPlan> ranks;

  // One DP replica (tp x pp ranks): the KV tokens it holds (its tightest rank), the longest
  // single sequence and the concurrent sequences of max_model_len tokens; totals over dp.
  int64_t max_kv_tokens = 0;  // tightest rank: kv_bytes / kv_bytes_per_token (no window cap)
  int64_t max_context = 0;    // min(max_position_embeddings, one sequence in one replica)
  int64_t max_sequences_per_replica = 0;
  int64_t max_sequences = 0;  // * dp
};

// Plans the layout; INVALID_ARGUMENT listing every violation (one per line) otherwise.
absl::StatusOr<ShardingPlan> PlanSharding(const ModelConfig& config, const PlanOptions& options);

// The layout-only checks (no memory): world size vs devices, heads / KV heads / experts / layers
// against tp / ep / pp, ep in {1, tp * dp}, per-tensor splits (fp8 blocks, MLP rows). One message
// per violation.
std::vector<std::string> LayoutViolations(const ModelConfig& config, const MeshShape& shape,
                                          int devices);

// KV cache bytes one sequence of `tokens` tokens needs on `rank` (block rounding, window cap).
int64_t SequenceKvBytes(const ModelConfig& config, const RankPlan& rank, int64_t tokens,
                        int block_size);

// "80GiB", "80 GiB", "80GB", "80e9", "81920MiB", "1.5TiB" -> bytes. Bare K/M/G/T suffixes are
// refused as ambiguous.
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text);
// "71.53 GiB" (binary units, two decimals; "512 B" below 1 KiB).
std::string FormatBytes(int64_t bytes);

}  // namespace tessera
