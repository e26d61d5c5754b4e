#include "kernels/base/tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status.h"

#include <vector>

namespace tessera {

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape ContiguousStrides(absl::Span<const int64_t> shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

absl::StatusOr<Tensor> Tensor::Empty(absl::Span<const int64_t> shape, DType dtype,
                                     Device device) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in shape ", ShapeToString(shape)));
    }
  }
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  ASSIGN_OR_RETURN(std::shared_ptr<Buffer> buffer, AllocateBuffer(device, bytes));
  Tensor t;
  t.buffer_ = std::move(buffer);
  t.shape_ = Shape(shape.begin(), shape.end());
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  return t;
}

absl::StatusOr<Tensor> Tensor::Zeros(absl::Span<const int64_t> shape, DType dtype,
                                     Device device) {
  ASSIGN_OR_RETURN(Tensor t, Empty(shape, dtype, device));
  if (device.is_cpu()) {
    t.SetZero();
  } else {
    ASSIGN_OR_RETURN(Tensor host, Zeros(shape, dtype, Device::Cpu()));
    RETURN_IF_ERROR(CopyBytes(t.raw_data(), device, host.raw_data(), Device::Cpu(), t.nbytes()));
  }
  return t;
}

absl::StatusOr<Tensor> Tensor::FromBuffer(std::shared_ptr<Buffer> buffer, size_t byte_offset,
                                          absl::Span<const int64_t> shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  if (buffer == nullptr || byte_offset > buffer->size() || bytes > buffer->size() - byte_offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "tensor ", DTypeName(dtype), ShapeToString(shape), " at byte offset ", byte_offset,
        " does not fit in a buffer of ", buffer ? buffer->size() : 0, " bytes"));
  }
  Tensor t;
  t.buffer_ = std::move(buffer);
  t.byte_offset_ = byte_offset;
  t.shape_ = Shape(shape.begin(), shape.end());
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  return t;
}

namespace {
template <typename T>
Tensor FromSpan(absl::Span<const T> values, absl::Span<const int64_t> shape, DType dtype) {
  CHECK_EQ(NumElements(shape), static_cast<int64_t>(values.size()))
      << "FromVector: " << values.size() << " values for shape " << ShapeToString(shape);
  absl::StatusOr<Tensor> t = Tensor::Empty(shape, dtype);
  CHECK(t.ok()) << t.status();
  if (!values.empty()) std::memcpy(t->raw_data(), values.data(), values.size() * sizeof(T));
  return *std::move(t);
}
}  // namespace

Tensor Tensor::FromVector(absl::Span<const float> values, absl::Span<const int64_t> shape) {
  return FromSpan(values, shape, DType::kF32);
}
Tensor Tensor::FromVector(absl::Span<const int32_t> values, absl::Span<const int64_t> shape) {
  return FromSpan(values, shape, DType::kI32);
}
Tensor Tensor::FromVector(absl::Span<const int64_t> values, absl::Span<const int64_t> shape) {
  return FromSpan(values, shape, DType::kI64);
}

int64_t Tensor::dim(int d) const {
  if (d < 0) d += ndim();
  CHECK(d >= 0 && d < ndim()) << "dim " << d << " of a " << ndim() << "-d tensor";
  return shape_[d];
}

int64_t Tensor::stride(int d) const {
  if (d < 0) d += ndim();
  CHECK(d >= 0 && d < ndim()) << "stride " << d << " of a " << ndim() << "-d tensor";
  return strides_[d];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

Tensor Tensor::Slice(int d, int64_t start, int64_t end) const {
  if (d < 0) d += ndim();
  CHECK(d >= 0 && d < ndim());
  CHECK(0 <= start && start <= end && end <= shape_[d])
      << "slice [" << start << ", " << end << ") of dim " << d << " of " << DebugString();
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(start * strides_[d]) * element_size();
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::Select(int d, int64_t index) const {
  if (d < 0) d += ndim();
  CHECK(d >= 0 && d < ndim());
  CHECK(0 <= index && index < shape_[d]) << "select " << index << " of dim " << d << " of "
                                          << DebugString();
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(index * strides_[d]) * element_size();
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

absl::StatusOr<Tensor> Tensor::Reshape(absl::Span<const int64_t> shape) const {
  if (!is_contiguous()) {
    return absl::FailedPreconditionError(
        absl::StrCat("reshape of non-contiguous tensor ", DebugString()));
  }
  Shape new_shape(shape.begin(), shape.end());
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < new_shape.size(); ++i) {
    if (new_shape[i] == -1) {
      if (infer >= 0) return absl::InvalidArgumentError("reshape with more than one -1");
      infer = static_cast<int>(i);
    } else {
      known *= new_shape[i];
    }
  }
  if (infer >= 0 && known != 0) new_shape[infer] = numel() / known;
  if (NumElements(new_shape) != numel()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reshape ", DebugString(), " to ",
                                                   ShapeToString(shape)));
  }
  Tensor t = *this;
  t.shape_ = new_shape;
  t.strides_ = ContiguousStrides(new_shape);
  return t;
}

Tensor Tensor::View(absl::Span<const int64_t> shape) const {
  absl::StatusOr<Tensor> t = Reshape(shape);
  CHECK(t.ok()) << t.status();
  return *std::move(t);
}

Tensor Tensor::AsStrided(absl::Span<const int64_t> shape, absl::Span<const int64_t> strides,
                         int64_t element_offset) const {
  CHECK_EQ(shape.size(), strides.size());
  int64_t max_index = element_offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    CHECK_GE(shape[i], 0);
    CHECK_GE(strides[i], 0);
    if (shape[i] > 0) max_index += (shape[i] - 1) * strides[i];
  }
  const size_t end_byte = byte_offset_ + static_cast<size_t>(max_index + 1) * element_size();
  CHECK(NumElements(shape) == 0 || end_byte <= buffer_->size())
      << "AsStrided view out of bounds of " << DebugString();
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(element_offset) * element_size();
  t.shape_ = Shape(shape.begin(), shape.end());
  t.strides_ = Shape(strides.begin(), strides.end());
  return t;
}

namespace {

// Calls fn(element_offset_in_src) for every element of a strided tensor in row-major order.
template <typename Fn>
void ForEachOffset(const Shape& shape, const Shape& strides, Fn&& fn) {
  const int nd = static_cast<int>(shape.size());
  if (NumElements(shape) == 0) return;
  Shape index(nd, 0);
  int64_t offset = 0;
  while (true) {
    fn(offset);
    int d = nd - 1;
    for (; d >= 0; --d) {
      ++index[d];
      offset += strides[d];
      if (index[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace

absl::Status Tensor::CopyFrom(const Tensor& src) {
  if (src.shape_ != shape_) {
    return absl::InvalidArgumentError(
        absl::StrCat("CopyFrom: shape mismatch ", src.DebugString(), " -> ", DebugString()));
  }
  if (!device().is_cpu() || !src.device().is_cpu()) {
    if (src.dtype_ != dtype_ || !src.is_contiguous() || !is_contiguous()) {
      return absl::UnimplementedError("device copies need equal dtypes and contiguous tensors");
    }
    return CopyBytes(raw_data(), device(), src.raw_data(), src.device(), nbytes());
  }
  if (is_contiguous() && src.is_contiguous()) {
    ConvertBuffer(src.raw_data(), src.dtype_, raw_data(), dtype_, static_cast<size_t>(numel()));
    return absl::OkStatus();
  }
  // Strided: gather element by element.
  const size_t src_es = src.element_size();
  const size_t dst_es = element_size();
  std::vector<int64_t> dst_offsets;
  dst_offsets.reserve(static_cast<size_t>(numel()));
  ForEachOffset(shape_, strides_, [&](int64_t o) { dst_offsets.push_back(o); });
  size_t i = 0;
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(raw_data());
  ForEachOffset(src.shape_, src.strides_, [&](int64_t o) {
    ConvertBuffer(s + o * src_es, src.dtype_, d + dst_offsets[i++] * dst_es, dtype_, 1);
  });
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Tensor::To(DType dtype) const {
  if (!defined()) return absl::FailedPreconditionError("To() on an undefined tensor");
  if (!device().is_cpu()) {
    if (dtype != dtype_) return absl::UnimplementedError("dtype conversion on a device tensor");
    return ToDevice(device());
  }
  ASSIGN_OR_RETURN(Tensor out, Empty(shape_, dtype, device()));
  RETURN_IF_ERROR(out.CopyFrom(*this));
  return out;
}

absl::StatusOr<Tensor> Tensor::ToDevice(Device device) const {
  if (!is_contiguous()) {
    if (!this->device().is_cpu()) return absl::UnimplementedError("strided device copy");
    ASSIGN_OR_RETURN(Tensor packed, To(dtype_));
    return packed.ToDevice(device);
  }
  ASSIGN_OR_RETURN(Tensor out, Empty(shape_, dtype_, device));
  RETURN_IF_ERROR(CopyBytes(out.raw_data(), device, raw_data(), this->device(), nbytes()));
  return out;
}

void Tensor::SetZero() {
  CHECK(device().is_cpu()) << "SetZero on " << device().ToString();
  if (is_contiguous()) {
    if (nbytes() > 0) std::memset(raw_data(), 0, nbytes());
    return;
  }
  char* d = static_cast<char*>(raw_data());
  const size_t es = element_size();
  ForEachOffset(shape_, strides_, [&](int64_t o) { std::memset(d + o * es, 0, es); });
}

std::string Tensor::DebugString() const {
  if (!defined()) return "undefined";
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_), " ", device().ToString());
}

}  // namespace tessera
