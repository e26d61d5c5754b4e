// Tensor: a typed, strided view of a Buffer on a device.
//
// A Tensor is shape + strides (in elements) + dtype + an offset into a shared Buffer. Copies of a
// Tensor share the buffer (like torch.Tensor); views (Slice, Select, View) never copy. An
// undefined Tensor (default-constructed) has no buffer. Tensors are not internally synchronised:
// concurrent writers to overlapping memory must coordinate.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/base/device.h"
#include "kernels/base/dtype.h"
#include "kernels/base/logging.h"

namespace tessera {

using Shape = absl::InlinedVector<int64_t, 6>;

std::string ShapeToString(absl::Span<const int64_t> shape);
int64_t NumElements(absl::Span<const int64_t> shape);
// Row-major (C order) strides in elements for `shape`.
Shape ContiguousStrides(absl::Span<const int64_t> shape);

class Tensor {
 public:
  Tensor() = default;

  // A new contiguous tensor; contents are uninitialised.
  static absl::StatusOr<Tensor> Empty(absl::Span<const int64_t> shape, DType dtype,
                                      Device device = Device::Cpu());
  // A new contiguous tensor filled with zeros.
  static absl::StatusOr<Tensor> Zeros(absl::Span<const int64_t> shape, DType dtype,
                                      Device device = Device::Cpu());
  // A contiguous view of `buffer` starting at `byte_offset`. Fails when it does not fit.
  static absl::StatusOr<Tensor> FromBuffer(std::shared_ptr<Buffer> buffer, size_t byte_offset,
                                           absl::Span<const int64_t> shape, DType dtype);
  // Host tensor copied from a span (f32 / i32 / i64 by the element type).
  static Tensor FromVector(absl::Span<const float> values, absl::Span<const int64_t> shape);
  static Tensor FromVector(absl::Span<const int32_t> values, absl::Span<const int64_t> shape);
  static Tensor FromVector(absl::Span<const int64_t> values, absl::Span<const int64_t> shape);

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return buffer_ ? buffer_->device() : Device::Cpu(); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  // Size of dimension `d`; negative `d` counts from the end.
  int64_t dim(int d) const;
  int64_t stride(int d) const;
  int64_t numel() const { return NumElements(shape_); }
  size_t element_size() const { return DTypeSize(dtype_); }
  // Bytes spanned by the elements (numel * element size).
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }
  size_t byte_offset() const { return byte_offset_; }

  void* raw_data() const {
    return buffer_ ? static_cast<char*>(buffer_->data()) + byte_offset_ : nullptr;
  }
  // Typed pointer to the first element; CHECKs that sizeof(T) matches the element size.
  template <typename T>
  T* data() const {
    CHECK(defined()) << "data() on an undefined tensor";
    CHECK_EQ(sizeof(T), element_size()) << "data<T>() with the wrong element type for "
                                        << DTypeName(dtype_);
    return static_cast<T*>(raw_data());
  }

  // View of [start, end) along `d`.
  Tensor Slice(int d, int64_t start, int64_t end) const;
  // View with dimension `d` removed, at `index`.
  Tensor Select(int d, int64_t index) const;
  // View with a new shape; the tensor must be contiguous and the element count must match.
  // One dimension may be -1 (inferred).
  absl::StatusOr<Tensor> Reshape(absl::Span<const int64_t> shape) const;
  // Reshape that CHECKs (for shapes the caller computed itself).
  Tensor View(absl::Span<const int64_t> shape) const;
  // View with explicit shape and strides in elements over the same storage (advanced: used for
  // interleaved layouts such as the latent KV cache). Bounds are CHECKed.
  Tensor AsStrided(absl::Span<const int64_t> shape, absl::Span<const int64_t> strides,
                   int64_t element_offset = 0) const;

  // A contiguous copy on the same device (host only for now) with dtype `dtype`.
  absl::StatusOr<Tensor> To(DType dtype) const;
  // A contiguous copy on `device`.
  absl::StatusOr<Tensor> ToDevice(Device device) const;
  absl::StatusOr<Tensor> Clone() const { return To(dtype_); }
  // Copies the elements of `src` (same shape; any dtype/strides on the host) into this tensor.
  absl::Status CopyFrom(const Tensor& src);
  // Sets every element to zero (host).
  void SetZero();

  // "f32[2, 3] cpu".
  std::string DebugString() const;

 private:
  std::shared_ptr<Buffer> buffer_;
  size_t byte_offset_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::kF32;
};

}  // namespace tessera
