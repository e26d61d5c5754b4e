// RopeConfig / RopeCache / ApplyRope of kernels/ops.h: builds the cos/sin tables on the host
// (kernels/cpu/rope.h documents the HF functions reproduced) and rotates host tensors; other
// CUDA tensors (CUDA builds) go to kernels/cuda/elementwise.cu with the tables copied once per
// (RopeCache tables, device) into a process-wide cache.
// Thread safety: a RopeCache is immutable after Create and may be shared by threads.

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/rope.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/ops_cuda.h"
#endif

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

#ifdef TESSERA_WITH_CUDA
namespace {

// The cos/sin tables of `cache` on `device`, copied on first use. Keyed by the host table buffer
// (kept alive by the entry, so the key is never reused) and the device index.
absl::StatusOr<std::pair<Tensor, Tensor>> DeviceRopeTables(const RopeCache& cache, Device device) {
  static std::mutex mutex;
  static auto* tables = new std::map<std::pair<const void*, int>,
                                     std::pair<std::shared_ptr<Buffer>, std::pair<Tensor, Tensor>>>();
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(cache.cos().buffer().get(), device.index);
  auto it = tables->find(key);
  if (it != tables->end()) return it->second.second;
  ASSIGN_OR_RETURN(Tensor cos, cache.cos().ToDevice(device));
  ASSIGN_OR_RETURN(Tensor sin, cache.sin().ToDevice(device));
  (*tables)[key] = {cache.cos().buffer(), {cos, sin}};
  return std::make_pair(cos, sin);
}

}  // namespace
#endif

absl::Status ApplyRope(const RopeCache& cache, const Tensor& positions, Tensor& x) {
#ifdef TESSERA_WITH_CUDA
  if (x.defined() && x.device().is_cuda()) {
    if (!cache.cos().defined()) {
      return absl::FailedPreconditionError("ApplyRope: the RopeCache was not built by Create");
    }
    ASSIGN_OR_RETURN(auto tables, DeviceRopeTables(cache, x.device()));
    return cuda::ApplyRope(cache.config(), tables.first, tables.second, positions, x);
  }
#endif
  RETURN_IF_ERROR(cpu::RequireHost("ApplyRope", {{"positions", &positions}, {"x", &x}}));
  if (!cache.cos().defined()) {
    return absl::FailedPreconditionError("ApplyRope: the RopeCache was not built by Create");
  }
  return cpu::ApplyRopeWithTables(cache.config(), cache.cos().data<float>(),
                                  cache.sin().data<float>(), positions, x);
}

}  // namespace tessera
