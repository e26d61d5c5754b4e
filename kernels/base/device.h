// Devices and the memory that lives on them.
//
// A Device names where a tensor's bytes are: the host CPU, or a CUDA GPU (when Tessera is built
// with CUDA; see kernels/cuda/cuda_device.h for streams and the caching allocator). A Buffer owns
// (or borrows, with a keep-alive handle) a contiguous byte range on one device; tensors share
// buffers through std::shared_ptr. Allocation is thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace tessera {

enum class DeviceType : uint8_t { kCPU = 0, kCUDA = 1 };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device Cpu() { return Device{DeviceType::kCPU, 0}; }
  static Device Cuda(int index) { return Device{DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  // "cpu" or "cuda:N".
  std::string ToString() const;
  // Parses "cpu", "cuda" (= cuda:0) or "cuda:N".
  static absl::StatusOr<Device> Parse(absl::string_view text);
  friend bool operator==(const Device& a, const Device& b) {
    return a.type == b.type && a.index == b.index;
  }
};

// A contiguous byte range on a device. Move-only; released by its deleter.
class Buffer {
 public:
  using Deleter = std::function<void(void*)>;
  Buffer(void* data, size_t size, Device device, Deleter deleter)
      : data_(data), size_(size), device_(device), deleter_(std::move(deleter)) {}
  ~Buffer() {
    if (deleter_) deleter_(data_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t size_;
  Device device_;
  Deleter deleter_;
};

// Allocates `bytes` on `device` (64-byte aligned on the CPU; zero bytes is allowed). Fails with
// RESOURCE_EXHAUSTED when memory runs out and UNIMPLEMENTED for CUDA in a CPU-only build.
absl::StatusOr<std::shared_ptr<Buffer>> AllocateBuffer(Device device, size_t bytes);

// Wraps memory owned elsewhere (an mmap'ed file, a caller's array). `keep_alive` is held for the
// buffer's lifetime; the memory itself is never freed by the buffer.
std::shared_ptr<Buffer> WrapBuffer(void* data, size_t bytes, Device device,
                                   std::shared_ptr<void> keep_alive);

// Device allocators register themselves here (the CUDA backend does at start-up).
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual absl::StatusOr<std::shared_ptr<Buffer>> Allocate(Device device, size_t bytes) = 0;
};
void RegisterDeviceAllocator(DeviceType type, DeviceAllocator* allocator);

// Copies bytes between any two devices (host<->device through the registered backend).
absl::Status CopyBytes(void* dst, Device dst_device, const void* src, Device src_device,
                       size_t bytes);
class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;
  virtual absl::Status Copy(void* dst, Device dst_device, const void* src, Device src_device,
                            size_t bytes) = 0;
};
void RegisterDeviceCopier(DeviceCopier* copier);

}  // namespace tessera
