// CPU rotary position embedding (RoPE) for kernels/ops.h: inverse frequencies, cos/sin tables
// and the in-place rotation, reproducing the Hugging Face transformers implementations.
//
// Which HF function each RopeConfig option reproduces:
// - Scaling::kNone   -> modeling_rope_utils._compute_default_rope_parameters: inv_freq[i] =
//                       1 / theta^(2i / rotary_dim); attention scaling 1.
// - Scaling::kLinear -> _compute_linear_scaling_rope_parameters: inv_freq / factor (the same as
//                       dividing positions by factor).
// - Scaling::kLlama3 -> _compute_llama3_parameters: low/high frequency wavelength thresholds
//                       original_max_position / low_freq_factor and / high_freq_factor, a
//                       smooth blend in between; attention scaling 1.
// - Scaling::kYarn   -> _compute_yarn_parameters (Qwen3, GLM-4.5, gpt-oss with "yarn"
//                       rope_scaling) and, identically, DeepseekV3YarnRotaryEmbedding of the
//                       DeepSeek-V3 / Kimi K2 remote code: find_correction_range(beta_fast,
//                       beta_slow, rotary_dim, theta, original_max_position) (floor/ceil when
//                       `truncate`, raw values when not, as gpt-oss sets), a linear ramp over
//                       rotary_dim / 2, inv_freq = inter * (1 - e) + extra * e with
//                       e = 1 - ramp, extra = 1 / pos_freq, inter = 1 / (factor * pos_freq).
//                       Attention scaling (the cos/sin multiplier): when mscale and
//                       mscale_all_dim are both non-zero, get_mscale(factor, mscale) /
//                       get_mscale(factor, mscale_all_dim) (DeepSeek-V3's _mscale; 1.0 for its
//                       mscale = mscale_all_dim = 1); otherwise get_mscale(factor) =
//                       0.1 ln(factor) + 1 (gpt-oss: 1.3466 for factor 32), where
//                       get_mscale(s, m) = s <= 1 ? 1 : 0.1 m ln(s) + 1.
//                       `factor` is used as given: HF releases that derive it from
//                       max_position_embeddings / original_max_position_embeddings leave it to
//                       the caller (the model config loader).
//                       Divergence: DeepSeek's remote code with mscale != 1 and
//                       mscale_all_dim == 0 would give get_mscale(factor, mscale); HF rope_utils
//                       (implemented here) gives get_mscale(factor). No released config has it.
//
// Numerics follow HF's float32 computation: inv_freq is computed with f32 operations in HF's
// order (the power theta^(2i/d) rounded once to f32), the angle is the f32 product
// position * inv_freq, cos/sin of that f32 angle are rounded to f32 and then multiplied by the
// f32 attention scaling, so the tables match HF's cos/sin to about 1 ulp.
//
// Layouts: neox_style rotates pairs (x[i], x[i + r/2]) (rotate_half: Llama, Qwen, Mixtral,
// gpt-oss, GLM-4.5, MiniMax-M2); otherwise GPT-J pairs (x[2i], x[2i+1]). Only the first
// rotary_dim elements of each head rotate; the rest pass through unchanged (partial rotary,
// GLM-4.5 / MiniMax-M2). DeepSeek-V3's apply_rotary_pos_emb de-interleaves q and k
// (view(d/2, 2).transpose) before rotate_half; that equals GPT-J rotation followed by one fixed
// permutation applied to both q and k, so q·k (the attention scores) are identical: DeepSeek-V3
// and Kimi K2 use neox_style = false with this kernel, and the cached k_pe stays in the
// interleaved order consistently.
//
// Thread safety: pure functions; ApplyRopeWithTables writes only its x.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/base/tensor.h"
#include "kernels/ops.h"

namespace tessera::cpu {

// rotary_dim, with 0 meaning head_dim.
int RotaryDim(const RopeConfig& config);
// INVALID_ARGUMENT naming the field when the config is unusable (head_dim <= 0, rotary_dim odd
// or > head_dim, theta <= 0, max_position <= 0, factor <= 0, missing original_max_position for
// YaRN / Llama3, low_freq_factor >= high_freq_factor, beta_fast <= 0, ...).
absl::Status ValidateRopeConfig(const RopeConfig& config);
// The inverse frequencies [RotaryDim / 2] computed in f32 as HF does (see above).
std::vector<float> RopeInvFreqF32(const RopeConfig& config);
// The cos/sin multiplier (YaRN's attention factor; 1 otherwise).
double RopeAttentionScaling(const RopeConfig& config);
// Fills cos/sin: [max_position, RotaryDim / 2] f32 contiguous from f32 inv_freq.
void FillRopeTables(const RopeConfig& config, const std::vector<float>& inv_freq, float* cos,
                    float* sin);

// Checks x ([num_tokens, num_heads, head_dim] f32, last dimension contiguous) and positions
// ([num_tokens] i32/i64) against config; positions outside [0, max_position) are OUT_OF_RANGE.
absl::Status ValidateApplyRope(const RopeConfig& config, const Tensor& positions, const Tensor& x);
// Rotates x in place with tables cos/sin [max_position, RotaryDim / 2]. Validates first.
absl::Status ApplyRopeWithTables(const RopeConfig& config, const float* cos, const float* sin,
                                 const Tensor& positions, Tensor& x);

}  // namespace tessera::cpu
