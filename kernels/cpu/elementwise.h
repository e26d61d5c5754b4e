// CPU implementations of the normalisation and elementwise operations of kernels/ops.h
// (RmsNorm, AddRmsNorm, SiluAndMul, ClampedSwiGlu, Softmax, Embedding, Axpy), plus the operand
// validation they share with the references in kernels/cpu/reference_elementwise.h.
//
// Contract: the functions in namespace tessera::cpu validate shapes and dtypes exactly as
// ops.h documents (INVALID_ARGUMENT naming the operand) and require every tensor to be on the
// host; the device-neutral entry points in kernels/ops_elementwise.cc route host tensors here.
// Row-wise operations accept any tensor whose last dimension is contiguous (stride 1): leading
// dimensions are flattened into rows, whatever their strides, so a per-head view
// [num_tokens, num_heads, head_dim] into a fused qkv buffer works directly.
// The hot loops (RmsNorm, AddRmsNorm, SiluAndMul, ClampedSwiGlu, Softmax, Axpy) use AVX-512 when
// the CPU has it (cpu::ActiveIsa(), honouring TESSERA_CPU_ISA) and portable loops otherwise; many
// rows are split over ThreadPool::Default().
//
// Thread safety: stateless; calls on disjoint outputs may run concurrently.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/base/tensor.h"

namespace tessera::cpu {

// The rows of a tensor whose last dimension is contiguous. Row r (0 <= r < num_rows, in
// row-major order of the leading dimensions) starts at Ptr(r) and holds row_size elements.
class RowView {
 public:
  // Fails when `t` is undefined, 0-d, or its last dimension has a stride other than 1
  // (a last dimension of size 1 is accepted whatever its stride). `name` names the operand.
  static absl::StatusOr<RowView> Of(const Tensor& t, absl::string_view name);

  int64_t num_rows() const { return num_rows_; }
  int64_t row_size() const { return row_size_; }
  // Element offset of row r from the tensor's first element.
  int64_t RowOffset(int64_t r) const {
    if (num_lead_ == 1) return r * lead_strides_[0];
    int64_t offset = 0;
    for (int d = num_lead_ - 1; d >= 0; --d) {
      offset += (r % lead_sizes_[d]) * lead_strides_[d];
      r /= lead_sizes_[d];
    }
    return offset;
  }
  template <typename T>
  T* Ptr(int64_t r) const {
    return static_cast<T*>(base_) + RowOffset(r);
  }

 private:
  void* base_ = nullptr;
  int64_t num_rows_ = 0;
  int64_t row_size_ = 0;
  int num_lead_ = 0;
  int64_t lead_sizes_[8] = {};
  int64_t lead_strides_[8] = {};
};

// OK when every defined tensor lives on the host. Otherwise UNIMPLEMENTED naming the CUDA
// backend (all on one other device) or INVALID_ARGUMENT (devices differ). Pairs name the operands.
absl::Status RequireHost(
    absl::string_view op,
    std::initializer_list<std::pair<absl::string_view, const Tensor*>> tensors);

// ---- Validation shared with tessera::ref -------------------------------------------------------

// Each returns OK when the operands satisfy the ops.h contract of the operation of that name.
// host_only = false (the CUDA backend) checks shapes and dtypes only: tensors may live on a
// device and device-resident values (Embedding's ids) are not read.
absl::Status ValidateRmsNorm(const Tensor& x, const Tensor& weight, const Tensor& out,
                             bool host_only = true);
absl::Status ValidateAddRmsNorm(const Tensor& residual, const Tensor& delta, const Tensor& weight,
                                const Tensor& out, bool host_only = true);
absl::Status ValidateGatedActivation(absl::string_view op, const Tensor& gate_up,
                                     const Tensor& out, bool host_only = true);
absl::Status ValidateSoftmax(const Tensor& x, bool host_only = true);
absl::Status ValidateEmbedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                               int64_t vocab_size, const Tensor& out, bool host_only = true);
absl::Status ValidateAxpy(const Tensor& x, const Tensor& out, bool host_only = true);

// ---- CPU kernels (same contracts as ops.h) -----------------------------------------------------

// Numerics follow the Hugging Face modules: RmsNorm is LlamaRMSNorm / Qwen3RMSNorm /
// DeepseekV3RMSNorm in f32, out = (x * (1 / sqrt(mean(x^2) + eps))) * weight; silu(g) is
// g / (1 + exp(-g)); ClampedSwiGlu is GptOssExperts' gate (gate = min(gate, limit),
// up = clamp(up, -limit, limit), (up + 1) * gate * sigmoid(alpha * gate)); Softmax subtracts the
// row maximum, so a row of all -inf gives NaN as torch.softmax does. Outputs may alias inputs
// exactly (same rows), never partially.

// x, out: [..., hidden] f32; weight: [hidden] f32. out may alias x.
absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
// residual, delta, out: [..., hidden] f32; weight: [hidden] f32. out may alias delta or residual.
absl::Status AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                        Tensor& out);
// gate_up: [..., 2 * inter] = [gate | up] f32; out: [..., inter] f32.
absl::Status SiluAndMul(const Tensor& gate_up, Tensor& out);
// gate_up: [..., 2 * inter] interleaved (gate, up) f32; out: [..., inter] f32.
absl::Status ClampedSwiGlu(const Tensor& gate_up, float alpha, float limit, Tensor& out);
// x: [..., cols] f32, softmax over the last dimension in place.
absl::Status Softmax(Tensor& x);
// table: [vocab_rows, hidden] f32/bf16/f16; ids: [num_tokens] i32; out: [num_tokens, hidden] f32.
// Rows for ids outside [vocab_start, vocab_start + vocab_rows) are zero; with vocab_size > 0 an
// id outside [0, vocab_size) is INVALID_ARGUMENT (checked before anything is written).
absl::Status Embedding(const Tensor& table, const Tensor& ids, int64_t vocab_start,
                       int64_t vocab_size, Tensor& out);
// out += scale * x; x, out: same shape f32, last dimension contiguous.
absl::Status Axpy(float scale, const Tensor& x, Tensor& out);

// The AVX-512 paths run when cpu::ActiveIsa() (kernels/cpu/cpu_features.h: CPU support capped
// by TESSERA_CPU_ISA / SetIsaOverride) is kAvx512 and they are not turned off here; otherwise the
// portable loops run (there is no separate AVX2 variant: the portable loops auto-vectorise).
// SetAvx512EnabledForTesting(false) turns the AVX-512 paths off, (true) restores them, so tests
// can exercise the portable loops on any machine. Not thread safe with running kernels.
void SetAvx512EnabledForTesting(bool enabled);
bool Avx512Enabled();

}  // namespace tessera::cpu
