// RopeConfig / RopeCache / ApplyRope of kernels/ops.h: builds the cos/sin tables on the host
// (kernels/cpu/rope.h documents the HF functions reproduced) and rotates host tensors; other
// devices return UNIMPLEMENTED (the CUDA backend has no RoPE kernel yet).
// Thread safety: a RopeCache is immutable after Create and may be shared by threads.

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rope.h"
#include "kernels/ops.h"

namespace tessera {

double RopeConfig::AttentionScaling() const { return cpu::RopeAttentionScaling(*this); }

absl::StatusOr<RopeCache> RopeCache::Create(const RopeConfig& config) {
  RETURN_IF_ERROR(cpu::ValidateRopeConfig(config));
  RopeCache cache;
  cache.config_ = config;
  const int64_t half = cpu::RotaryDim(config) / 2;
  const std::vector<float> inv_freq = cpu::RopeInvFreqF32(config);
  cache.inv_freq_.assign(inv_freq.begin(), inv_freq.end());
  ASSIGN_OR_RETURN(cache.cos_, Tensor::Empty({config.max_position, half}, DType::kF32));
  ASSIGN_OR_RETURN(cache.sin_, Tensor::Empty({config.max_position, half}, DType::kF32));
  if (half > 0) {
    cpu::FillRopeTables(config, inv_freq, cache.cos_.data<float>(), cache.sin_.data<float>());
  }
  return cache;
}

absl::Status ApplyRope(const RopeCache& cache, const Tensor& positions, Tensor& x) {
  RETURN_IF_ERROR(cpu::RequireHost("ApplyRope", {{"positions", &positions}, {"x", &x}}));
  if (!cache.cos().defined()) {
    return absl::FailedPreconditionError("ApplyRope: the RopeCache was not built by Create");
  }
  return cpu::ApplyRopeWithTables(cache.config(), cache.cos().data<float>(),
                                  cache.sin().data<float>(), positions, x);
}

}  // namespace tessera
