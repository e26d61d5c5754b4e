// Device-neutral entry points for the paged-attention operations of kernels/ops.h: host tensors
// go to kernels/cpu/attention.h; in CUDA builds, calls whose output is on a CUDA device go to
// kernels/cuda/attention.cu. Thread safety: as the CPU kernels (stateless).
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"
#include "kernels/cpu/attention.h"
#include "kernels/ops.h"

#ifdef TESSERA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace tessera {
namespace {

// OK when every defined tensor is on the host; UNIMPLEMENTED naming the op and device otherwise.
absl::Status RequireHost(absl::string_view op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t->defined() && !t->device().is_cpu()) {
      return absl::UnimplementedError(absl::StrCat(
          op, ": tensors on ", t->device().ToString(),
          " are not supported: the CUDA backend (kernels/cuda) has no ", op, " kernel yet"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                          Tensor& k_cache, Tensor& v_cache) {
#ifdef TESSERA_WITH_CUDA
  if (k_cache.defined() && k_cache.device().is_cuda()) {
    return cuda::WriteKvCache(k, v, slot_mapping, k_cache, v_cache);
  }
#endif
  RETURN_IF_ERROR(RequireHost("WriteKvCache", {&k, &v, &slot_mapping, &k_cache, &v_cache}));
  return cpu::WriteKvCache(k, v, slot_mapping, k_cache, v_cache);
}

absl::Status PagedAttention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& block_tables, const Tensor& seq_lens,
                            const Tensor& query_start_loc, const AttentionParams& params,
                            Tensor& out) {
#ifdef TESSERA_WITH_CUDA
  if (out.defined() && out.device().is_cuda()) {
    return cuda::PagedAttention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                params, out);
  }
#endif
  RETURN_IF_ERROR(RequireHost("PagedAttention", {&q, &k_cache, &v_cache, &block_tables, &seq_lens,
                                                 &query_start_loc, &params.sinks, &out}));
  return cpu::PagedAttention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, params,
                             out);
}

}  // namespace tessera
