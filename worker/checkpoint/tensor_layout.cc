#include "worker/checkpoint/tensor_layout.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/logging.h"

namespace tessera {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// fnmatch-style match with '*' only (gpt-oss writes "model.layers.*.self_attn").
bool GlobMatch(absl::string_view pattern, absl::string_view text) {
  size_t p = 0, t = 0, star = absl::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// Whether module `module` (a tensor name without ".weight") is listed in modules_to_not_convert:
// exactly, as a glob, as a trailing component ("gate" matches "...mlp.gate") or as a prefix of
// the module path ("model.layers.*.self_attn" covers its projections).
bool NotConverted(const QuantizationConfig& q, absl::string_view module) {
  for (const std::string& entry : q.modules_to_not_convert) {
    if (module == entry || absl::EndsWith(module, absl::StrCat(".", entry))) return true;
    if (absl::StartsWith(module, absl::StrCat(entry, "."))) return true;
    if (entry.find('*') != std::string::npos &&
        (GlobMatch(entry, module) || GlobMatch(absl::StrCat(entry, ".*"), module))) {
      return true;
    }
  }
  return false;
}

struct Split {
  TensorSplit kind = TensorSplit::kReplicated;
  int dim = 0;
  int64_t unit = 1;
  TensorSplit expert_tp = TensorSplit::kReplicated;
};

Split Replicated() { return {}; }
Split Columns(int64_t unit = 1) { return {TensorSplit::kTensorParallel, 0, unit}; }
Split Rows(int64_t unit = 1) { return {TensorSplit::kTensorParallel, 1, unit}; }
Split KvHeads(int64_t head_dim) { return {TensorSplit::kKvHeads, 0, head_dim}; }
Split Vocab() { return {TensorSplit::kVocab, 0, 1}; }
Split FirstTpRank() { return {TensorSplit::kFirstTpRank, 0, 1}; }
Split GroupColumns() { return {TensorSplit::kMoeGroup, 0, 1}; }
Split GroupRows() { return {TensorSplit::kMoeGroup, 1, 1}; }
// A routed expert's projection; with ep == 1 split over TP along `dim` (0: gate/up rows,
// 1: down columns).
Split Expert(int dim) { return {TensorSplit::kExpert, dim, 1, TensorSplit::kTensorParallel}; }
// A stacked gpt-oss expert tensor [E, ...]; with ep == 1 split over TP along `dim` in units of
// `unit` (2 keeps interleaved gate/up pairs together), or held by `expert_tp`.
Split Stacked(int dim, int64_t unit = 1,
              TensorSplit expert_tp = TensorSplit::kTensorParallel) {
  return {TensorSplit::kExpertStacked, dim, unit, expert_tp};
}

class Builder {
 public:
  Builder(const ModelConfig& c, std::vector<CheckpointTensor>* out) : c_(c), out_(out) {}

  void Begin(TensorPlacement placement, int layer) {
    placement_ = placement;
    layer_ = layer;
  }

  void Add(std::string name, std::vector<int64_t> shape, DType dtype, Split split,
           int expert = -1) {
    CheckpointTensor t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.dtype = dtype;
    t.placement = placement_;
    t.layer = layer_;
    t.expert = expert;
    t.split = split.kind;
    t.expert_tp = split.expert_tp;
    t.split_dim = split.dim;
    t.unit = split.unit;
    t.extent = t.shape.empty() ? 0 : t.shape[split.dim];
    out_->push_back(std::move(t));
  }

  // A vector in the model dtype (norm weights, biases, sinks).
  void Vector(std::string name, int64_t size, Split split = Replicated()) {
    Add(std::move(name), {size}, c_.torch_dtype, split);
  }

  // A projection "<prefix>.weight" [out, in]; fp8 block-quantised (with "<prefix>.weight_scale_inv")
  // when the checkpoint is fp8, `quantizable` and the module is not in modules_to_not_convert.
  // "<prefix>.bias" [out] when `bias`: split with the output rows; on TP rank 0 only for a
  // row-parallel weight.
  void Linear(const std::string& prefix, int64_t out, int64_t in, Split split, bool bias = false,
              bool quantizable = true, int expert = -1) {
    const QuantizationConfig& q = c_.quantization;
    const bool fp8 = q.fp8 && quantizable && !NotConverted(q, prefix);
    Add(absl::StrCat(prefix, ".weight"), {out, in}, fp8 ? DType::kF8E4M3 : c_.torch_dtype, split, expert);
    if (fp8) {
      Add(absl::StrCat(prefix, ".weight_scale_inv"), {CeilDiv(out, q.block_n), CeilDiv(in, q.block_k)},
          DType::kF32, split, expert);
      CheckpointTensor& s = out_->back();
      s.extent = split.dim == 0 ? out : in;
      s.block = split.dim == 0 ? q.block_n : q.block_k;
      s.is_scale = true;
      s.params_per_element = 0;
    }
    if (bias) {
      // Column-parallel biases split with their rows; a row-parallel bias is added once, by TP
      // rank 0 (replicated weights keep a replicated bias).
      Split bias_split = split;
      if (split.dim == 1) bias_split = FirstTpRank();
      if (split.kind == TensorSplit::kReplicated) bias_split = Replicated();
      Add(absl::StrCat(prefix, ".bias"), {out}, c_.torch_dtype, bias_split, expert);
    }
  }

  void Mlp(const std::string& prefix, int64_t inter, Split col, Split row,
           const char* gate = "gate_proj", const char* up = "up_proj",
           const char* down = "down_proj", int expert = -1) {
    // Row-parallel MLPs carry no bias here, so `row` only splits the down weight.
    const int64_t h = c_.hidden_size;
    Linear(absl::StrCat(prefix, ".", gate), inter, h, col, false, true, expert);
    Linear(absl::StrCat(prefix, ".", up), inter, h, col, false, true, expert);
    Linear(absl::StrCat(prefix, ".", down), h, inter, row, false, true, expert);
  }

 private:
  const ModelConfig& c_;
  std::vector<CheckpointTensor>* out_;
  TensorPlacement placement_ = TensorPlacement::kLayer;
  int layer_ = -1;
};

bool QkvBias(const ModelConfig& c) {
  return c.family == ModelFamily::kQwen2Moe ? true : c.attention_bias;
}

// Mirrors the model loaders: o_proj carries a bias where their AttentionSpec sets o_bias.
bool OutputBias(const ModelConfig& c) {
  switch (c.family) {
    case ModelFamily::kGlm4Moe:
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kMixtral:
      return false;
    default:
      return c.attention_bias;
  }
}

void AddGqaAttention(const ModelConfig& c, const std::string& p, Builder& b) {
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, kv = c.num_key_value_heads;
  const int64_t hd = c.head_dim;
  const bool qkv_bias = QkvBias(c);
  b.Linear(p + "q_proj", nh * hd, h, Columns(hd), qkv_bias);
  b.Linear(p + "k_proj", kv * hd, h, KvHeads(hd), qkv_bias);
  b.Linear(p + "v_proj", kv * hd, h, KvHeads(hd), qkv_bias);
  b.Linear(p + "o_proj", h, nh * hd, Rows(hd), OutputBias(c));
  if (c.qk_norm) {
    if (c.qk_norm_per_layer) {  // MiniMax-M2: norms over all heads, split with them
      b.Vector(p + "q_norm.weight", nh * hd, Columns(hd));
      b.Vector(p + "k_norm.weight", kv * hd, KvHeads(hd));
    } else {
      b.Vector(p + "q_norm.weight", hd);
      b.Vector(p + "k_norm.weight", hd);
    }
  }
  if (c.attention_sinks) b.Vector(p + "sinks", nh, Columns(1));
}

void AddMlaAttention(const ModelConfig& c, const std::string& p, Builder& b) {
  const int64_t h = c.hidden_size, nh = c.num_attention_heads;
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  const bool bias = c.attention_bias;
  if (c.q_lora_rank > 0) {
    b.Linear(p + "q_a_proj", c.q_lora_rank, h, Replicated(), bias);
    b.Vector(p + "q_a_layernorm.weight", c.q_lora_rank);
    b.Linear(p + "q_b_proj", nh * qk, c.q_lora_rank, Columns(qk));
  } else {
    b.Linear(p + "q_proj", nh * qk, h, Columns(qk));
  }
  b.Linear(p + "kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h, Replicated(), bias);
  b.Vector(p + "kv_a_layernorm.weight", c.kv_lora_rank);
  b.Linear(p + "kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank,
           Columns(c.qk_nope_head_dim + c.v_head_dim));
  b.Linear(p + "o_proj", h, nh * c.v_head_dim, Rows(c.v_head_dim), bias);
}

void AddMoe(const ModelConfig& c, const std::string& p, Builder& b) {
  const int64_t h = c.hidden_size, e = c.num_experts, inter = c.moe_intermediate_size;
  const bool mixtral_names =
      c.family == ModelFamily::kMixtral || c.family == ModelFamily::kMiniMaxM2;
  if (c.family == ModelFamily::kGptOss) {
    b.Linear(p + "router", e, h, Replicated(), /*bias=*/true, /*quantizable=*/false);
    const std::string x = p + "experts.";
    if (c.quantization.mxfp4) {
      // 32 weights per block: 16 bytes of e2m1 pairs + one e8m0 scale byte (4.25 bits/weight).
      // With ep == 1: gate_up rows split in (gate, up) pairs, down split along its input
      // blocks of 32, the down bias on TP rank 0.
      b.Add(x + "gate_up_proj_blocks", {e, 2 * inter, h / 32, 16}, DType::kU8, Stacked(1, 2));
      b.Add(x + "gate_up_proj_scales", {e, 2 * inter, h / 32}, DType::kU8, Stacked(1, 2));
      b.Add(x + "gate_up_proj_bias", {e, 2 * inter}, c.torch_dtype, Stacked(1, 2));
      b.Add(x + "down_proj_blocks", {e, h, inter / 32, 16}, DType::kU8, Stacked(2));
      b.Add(x + "down_proj_scales", {e, h, inter / 32}, DType::kU8, Stacked(2));
      b.Add(x + "down_proj_bias", {e, h}, c.torch_dtype,
            Stacked(0, 1, TensorSplit::kFirstTpRank));
    } else {
      // x @ W layout: gate_up [E, hidden, 2 * inter] (interleaved gate / up columns),
      // down [E, inter, hidden].
      b.Add(x + "gate_up_proj", {e, h, 2 * inter}, c.torch_dtype, Stacked(2, 2));
      b.Add(x + "gate_up_proj_bias", {e, 2 * inter}, c.torch_dtype, Stacked(1, 2));
      b.Add(x + "down_proj", {e, inter, h}, c.torch_dtype, Stacked(1));
      b.Add(x + "down_proj_bias", {e, h}, c.torch_dtype,
            Stacked(0, 1, TensorSplit::kFirstTpRank));
    }
    return;
  }
  b.Linear(p + "gate", e, h, Replicated(), false, /*quantizable=*/false);
  if (c.family == ModelFamily::kMiniMaxM2) {
    if (c.use_routing_bias) b.Add(p + "e_score_correction_bias", {e}, DType::kF32, Replicated());
  } else if (c.family == ModelFamily::kGlm4Moe ||
             (c.family == ModelFamily::kDeepseekV3 && c.use_routing_bias)) {
    b.Add(p + "gate.e_score_correction_bias", {e}, DType::kF32, Replicated());
  }
  for (int x = 0; x < e; ++x) {
    const std::string ep = absl::StrCat(p, "experts.", x);
    if (mixtral_names) {
      b.Mlp(ep, inter, Expert(0), Expert(1), "w1", "w3", "w2", x);
    } else {
      b.Mlp(ep, inter, Expert(0), Expert(1), "gate_proj", "up_proj", "down_proj", x);
    }
  }
  if ((c.family == ModelFamily::kDeepseekV3 || c.family == ModelFamily::kGlm4Moe) &&
      c.n_shared_experts > 0) {
    b.Mlp(p + "shared_experts", c.n_shared_experts * inter, GroupColumns(), GroupRows());
  }
  if (c.family == ModelFamily::kQwen2Moe && c.shared_expert_intermediate_size > 0) {
    b.Mlp(p + "shared_expert", c.shared_expert_intermediate_size, GroupColumns(), GroupRows());
    b.Linear(p + "shared_expert_gate", 1, h, Replicated(), false, false);
  }
}

void AddDecoderLayer(const ModelConfig& c, int layer, Builder& b) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  b.Vector(p + "input_layernorm.weight", c.hidden_size);
  if (c.is_mla()) {
    AddMlaAttention(c, p + "self_attn.", b);
  } else {
    AddGqaAttention(c, p + "self_attn.", b);
  }
  b.Vector(p + "post_attention_layernorm.weight", c.hidden_size);
  const bool sparse_block =
      c.family == ModelFamily::kMixtral || c.family == ModelFamily::kMiniMaxM2;
  const std::string mlp = p + (sparse_block ? "block_sparse_moe." : "mlp.");
  if (LayerHasExperts(c, layer)) {
    AddMoe(c, mlp, b);
  } else {
    b.Mlp(p + "mlp", c.intermediate_size, Columns(), Rows());
  }
}

}  // namespace

int64_t CheckpointTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t CheckpointTensor::nbytes() const {
  return num_elements() * static_cast<int64_t>(DTypeSize(dtype));
}

bool LayerHasExperts(const ModelConfig& c, int layer) {
  if (layer < c.num_hidden_layers) return c.IsMoeLayer(layer);
  // MTP layers (DeepSeek-V3, GLM-4.5) follow the decoder's MoE rule past its last layer.
  if (c.num_experts <= 0) return false;
  return layer >= c.first_k_dense_replace && c.moe_layer_freq > 0 &&
         layer % c.moe_layer_freq == 0;
}

std::vector<CheckpointTensor> CheckpointTensors(const ModelConfig& c,
                                                const TensorLayoutOptions& options) {
  std::vector<CheckpointTensor> out;
  Builder b(c, &out);
  const int64_t h = c.hidden_size, v = c.vocab_size;
  b.Begin(TensorPlacement::kEmbedding, -1);
  b.Add("model.embed_tokens.weight", {v, h}, c.torch_dtype, Vocab());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    b.Begin(TensorPlacement::kLayer, i);
    AddDecoderLayer(c, i, b);
  }
  const bool has_mtp =
      c.family == ModelFamily::kDeepseekV3 || c.family == ModelFamily::kGlm4Moe;
  if (options.include_mtp && has_mtp) {
    for (int k = 0; k < c.num_nextn_predict_layers; ++k) {
      const int layer = c.num_hidden_layers + k;
      b.Begin(TensorPlacement::kMtp, layer);
      const std::string p = absl::StrCat("model.layers.", layer, ".");
      // The MTP layer stores its own copy of the embedding and head (DeepSeek-V3 README_WEIGHTS;
      // GLM-4.5's published totals, 358B / 110B, count them too).
      b.Add(p + "embed_tokens.weight", {v, h}, c.torch_dtype, Vocab());
      b.Vector(p + "enorm.weight", h);
      b.Vector(p + "hnorm.weight", h);
      b.Linear(p + "eh_proj", h, 2 * h, Replicated(), false, /*quantizable=*/false);
      b.Vector(p + "shared_head.norm.weight", h);
      b.Add(p + "shared_head.head.weight", {v, h}, c.torch_dtype, Vocab());
      AddDecoderLayer(c, layer, b);
    }
  }
  b.Begin(TensorPlacement::kHead, -1);
  b.Vector("model.norm.weight", h);
  if (!c.tie_word_embeddings) b.Add("lm_head.weight", {v, h}, c.torch_dtype, Vocab());

  // MXFP4: scales are no parameters; each block byte packs two weights.
  for (CheckpointTensor& t : out) {
    if (t.dtype != DType::kU8) continue;
    if (absl::EndsWith(t.name, "_scales")) {
      t.is_scale = true;
      t.params_per_element = 0;
    } else if (absl::EndsWith(t.name, "_blocks")) {
      t.params_per_element = 2;
    }
  }
  return out;
}

int64_t CountParameters(const std::vector<CheckpointTensor>& tensors) {
  int64_t n = 0;
  for (const CheckpointTensor& t : tensors) n += t.num_elements() * t.params_per_element;
  return n;
}

LayerRange PipelineStageLayers(int num_layers, int pp, int pp_rank) {
  LayerRange r;
  r.begin = static_cast<int>(static_cast<int64_t>(pp_rank) * num_layers / pp);
  r.end = static_cast<int>(static_cast<int64_t>(pp_rank + 1) * num_layers / pp);
  return r;
}

namespace {

// The weight range [begin, end) along split_dim that part `r` of `parts` holds under `kind`
// (kTensorParallel, kKvHeads or kVocab).
std::pair<int64_t, int64_t> WeightRange(const CheckpointTensor& t, TensorSplit kind, int parts,
                                        int r) {
  switch (kind) {
    case TensorSplit::kVocab: {
      const int64_t per = CeilDiv(t.extent, parts);
      const int64_t begin = std::min(t.extent, r * per);
      return {begin, std::min(t.extent, begin + per)};
    }
    case TensorSplit::kKvHeads: {
      const int64_t heads = t.extent / t.unit;
      if (heads < parts) {
        const int64_t head = static_cast<int64_t>(r) * heads / parts;
        return {head * t.unit, (head + 1) * t.unit};
      }
      const int64_t per = heads / parts * t.unit;
      return {r * per, (r + 1) * per};
    }
    default: {
      const int64_t per = t.extent / t.unit / parts * t.unit;
      return {r * per, (r + 1) * per};
    }
  }
}

// How a tensor splits over the mesh: the split kind applied along split_dim and the group it
// splits over (size, this rank's index). kReplicated / kFirstTpRank: not split.
struct EffectiveSplit {
  TensorSplit kind = TensorSplit::kReplicated;
  int parts = 1;
  int index = 0;
};

EffectiveSplit Effective(const CheckpointTensor& t, const MeshShape& shape,
                         const MeshCoord& coord) {
  switch (t.split) {
    case TensorSplit::kTensorParallel:
    case TensorSplit::kKvHeads:
    case TensorSplit::kVocab:
    case TensorSplit::kFirstTpRank:
      return {t.split, shape.tp, coord.tp_rank};
    case TensorSplit::kMoeGroup:
      return shape.ep > 1 ? EffectiveSplit{TensorSplit::kTensorParallel, shape.ep, coord.ep_rank}
                          : EffectiveSplit{TensorSplit::kTensorParallel, shape.tp, coord.tp_rank};
    case TensorSplit::kExpert:
    case TensorSplit::kExpertStacked:
      if (shape.ep == 1) return {t.expert_tp, shape.tp, coord.tp_rank};
      return {};
    case TensorSplit::kReplicated:
      return {};
  }
  return {};
}

TensorSlice MakeSlice(const CheckpointTensor& t, int dim, int64_t begin, int64_t end) {
  TensorSlice s;
  s.tensor = &t;
  s.shape = t.shape;
  if (dim >= 0 && (begin > 0 || end < t.shape[dim])) {
    s.dim = dim;
    s.begin = begin;
    s.end = end;
    s.shape[dim] = end - begin;
  } else {
    s.dim = -1;
    s.begin = 0;
    s.end = t.shape.empty() ? 0 : t.shape[0];
  }
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  s.nbytes = n * static_cast<int64_t>(DTypeSize(t.dtype));
  return s;
}

}  // namespace

std::vector<ByteRange> SliceByteRanges(const TensorSlice& slice) {
  const CheckpointTensor& t = *slice.tensor;
  const int64_t esize = static_cast<int64_t>(DTypeSize(t.dtype));
  if (slice.dim < 0) return {ByteRange{0, t.nbytes()}};
  int64_t outer = 1, inner = esize;
  for (int d = 0; d < slice.dim; ++d) outer *= t.shape[d];
  for (size_t d = slice.dim + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
  const int64_t extent = t.shape[slice.dim];
  std::vector<ByteRange> ranges;
  for (int64_t o = 0; o < outer; ++o) {
    const int64_t offset = (o * extent + slice.begin) * inner;
    const int64_t size = (slice.end - slice.begin) * inner;
    if (!ranges.empty() && ranges.back().offset + ranges.back().size == offset) {
      ranges.back().size += size;
    } else {
      ranges.push_back({offset, size});
    }
  }
  return ranges;
}

bool RankSlice(const ModelConfig& c, const CheckpointTensor& t, const MeshShape& shape,
               const MeshCoord& coord, const RankTensorOptions& options, TensorSlice* slice) {
  const bool first = coord.pp_rank == 0, last = coord.pp_rank == shape.pp - 1;
  bool held = false;
  switch (t.placement) {
    case TensorPlacement::kEmbedding:
      held = first || (last && c.tie_word_embeddings);
      break;
    case TensorPlacement::kLayer:
      held = PipelineStageLayers(c.num_hidden_layers, shape.pp, coord.pp_rank).contains(t.layer);
      break;
    case TensorPlacement::kHead:
      held = last;
      break;
    case TensorPlacement::kMtp:
      held = last && options.load_mtp;
      break;
  }
  if (!held) return false;
  const int64_t experts_per_rank = c.num_experts > 0 ? c.num_experts / shape.ep : 0;
  if (shape.ep > 1 && t.split == TensorSplit::kExpert) {
    if (experts_per_rank == 0 || t.expert / experts_per_rank != coord.ep_rank) return false;
    *slice = MakeSlice(t, -1, 0, 0);
    return true;
  }
  if (shape.ep > 1 && t.split == TensorSplit::kExpertStacked) {
    *slice = MakeSlice(t, 0, coord.ep_rank * experts_per_rank,
                       (coord.ep_rank + 1) * experts_per_rank);
    return true;
  }
  const EffectiveSplit e = Effective(t, shape, coord);
  switch (e.kind) {
    case TensorSplit::kReplicated:
      *slice = MakeSlice(t, -1, 0, 0);
      return true;
    case TensorSplit::kFirstTpRank:
      if (coord.tp_rank != 0) return false;
      *slice = MakeSlice(t, -1, 0, 0);
      return true;
    default: {
      auto [begin, end] = WeightRange(t, e.kind, e.parts, e.index);
      if (t.block > 1) {
        begin = begin / t.block;
        end = CeilDiv(end, t.block);
      }
      *slice = MakeSlice(t, t.split_dim, begin, end);
      return true;
    }
  }
}

std::vector<TensorSlice> RankTensors(const ModelConfig& c,
                                     const std::vector<CheckpointTensor>& tensors,
                                     const MeshShape& shape, const MeshCoord& coord,
                                     const RankTensorOptions& options) {
  std::vector<TensorSlice> out;
  TensorSlice slice;
  for (const CheckpointTensor& t : tensors) {
    if (RankSlice(c, t, shape, coord, options, &slice)) out.push_back(std::move(slice));
  }
  return out;
}

namespace {

// "model.layers.7.mlp.experts.3.w1.weight" -> "model.layers.*.mlp.experts.*.w1.weight".
std::string NamePattern(const std::string& name) {
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    if (std::isdigit(static_cast<unsigned char>(name[i])) && i > 0 && name[i - 1] == '.') {
      while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
      out += '*';
    } else {
      out += name[i++];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> ValidateTensorSplits([[maybe_unused]] const ModelConfig& c,
                                              const std::vector<CheckpointTensor>& tensors,
                                              const MeshShape& shape) {
  // Problems keyed by tensor pattern; the layers they occur in are listed once.
  std::map<std::string, std::pair<std::string, std::vector<int>>> problems;
  std::vector<std::string> order;
  auto report = [&](const CheckpointTensor& t, std::string why) {
    const std::string key = NamePattern(t.name) + "|" + why;
    auto [it, inserted] = problems.try_emplace(key, why, std::vector<int>{});
    if (inserted) order.push_back(key);
    if (t.layer >= 0) it->second.second.push_back(t.layer);
  };
  for (const CheckpointTensor& t : tensors) {
    const EffectiveSplit e = Effective(t, shape, MeshCoord{});
    if (e.kind != TensorSplit::kTensorParallel && e.kind != TensorSplit::kKvHeads) continue;
    const int parts = e.parts;
    const std::string over = t.split == TensorSplit::kMoeGroup && shape.ep > 1
                                 ? absl::StrCat("the MoE group (--ep ", parts, ")")
                                 : absl::StrCat("--tp ", parts);
    if (e.kind == TensorSplit::kTensorParallel) {
      const int64_t units = t.extent / t.unit;
      const bool mx_columns = t.dtype == DType::kU8 && t.split == TensorSplit::kExpertStacked &&
                              t.split_dim == 2;  // MXFP4 down_proj: input columns in blocks
      if (mx_columns && units % parts != 0) {
        // Reported once, on the blocks (the scales split with them). Same rule as the loader
        // (MoeBlock): each rank's columns must be whole MX blocks of 32.
        if (!t.is_scale) {
          report(t, absl::StrCat(
                        "MXFP4 experts split over ", over, " need whole MX blocks of 32 per rank, "
                        "but moe_intermediate_size ", units * 32, " holds ", units,
                        " block(s); ",
                        units > 1 ? absl::StrCat("use a --tp that divides ", units)
                                  : std::string("no --tp > 1 can split it"),
                        ", or expert parallelism (--ep), which keeps experts whole"));
        }
        continue;
      }
      if (units % parts != 0) {
        report(t, absl::StrCat("dim ", t.split_dim, " holds ", units,
                               t.unit > 1 ? absl::StrCat(" groups of ", t.unit) : " rows",
                               ", which do not split evenly over ", over));
        continue;
      }
    } else {
      const int64_t heads = t.extent / t.unit;
      if ((heads >= parts && heads % parts != 0) || (heads < parts && parts % heads != 0)) {
        report(t, absl::StrCat(heads, " KV heads and ", over,
                               " do not divide one another (KV heads are split, or replicated "
                               "when fewer than tp)"));
        continue;
      }
    }
    if (t.block > 1 && parts > 1) {
      for (int r = 0; r < parts; ++r) {
        const auto [begin, end] = WeightRange(t, e.kind, parts, r);
        if (begin % t.block != 0 || (end % t.block != 0 && end != t.extent)) {
          report(t, absl::StrCat("the fp8 weight's per-rank range [", begin, ", ", end,
                                 ") along dim ", t.split_dim, " cuts its ", t.block,
                                 "-wide scale blocks; choose a layout that gives each rank a "
                                 "multiple of ",
                                 t.block));
          break;
        }
      }
    }
  }
  std::vector<std::string> out;
  for (const std::string& key : order) {
    const auto& [why, layers] = problems[key];
    std::string where;
    if (!layers.empty()) {
      const int lo = *std::min_element(layers.begin(), layers.end());
      const int hi = *std::max_element(layers.begin(), layers.end());
      where = lo == hi ? absl::StrCat(" (layer ", lo, ")")
                       : absl::StrCat(" (layers ", lo, "..", hi, ")");
    }
    const std::string pattern = key.substr(0, key.find('|'));
    out.push_back(absl::StrCat("tensor ", pattern, where, ": ", why));
  }
  return out;
}

}  // namespace tessera
