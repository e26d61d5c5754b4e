#include "kernels/base/device.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

std::atomic<DeviceAllocator*> g_cuda_allocator{nullptr};
std::atomic<DeviceCopier*> g_copier{nullptr};

}  // namespace

std::string Device::ToString() const {
  return is_cpu() ? std::string("cpu") : absl::StrCat("cuda:", index);
}

absl::StatusOr<Device> Device::Parse(absl::string_view text) {
  if (text == "cpu") return Device::Cpu();
  if (text == "cuda") return Device::Cuda(0);
  if (text.substr(0, 5) == "cuda:") {
    int index;
    if (absl::SimpleAtoi(text.substr(5), &index) && index >= 0) return Device::Cuda(index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid device '", text, "': expected 'cpu', 'cuda' or 'cuda:N'"));
}

absl::StatusOr<std::shared_ptr<Buffer>> AllocateBuffer(Device device, size_t bytes) {
  if (device.is_cpu()) {
    const size_t rounded = ((bytes + 63) / 64) * 64;
    void* data = rounded == 0 ? nullptr : std::aligned_alloc(64, rounded);
    if (rounded != 0 && data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of host memory allocating ", bytes, " bytes"));
    }
    return std::make_shared<Buffer>(data, bytes, device, [](void* p) { std::free(p); });
  }
  DeviceAllocator* allocator = g_cuda_allocator.load();
  if (allocator == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "cannot allocate on ", device.ToString(),
        ": this build of Tessera has no CUDA backend (rebuild with the CUDA toolkit installed)"));
  }
  return allocator->Allocate(device, bytes);
}

std::shared_ptr<Buffer> WrapBuffer(void* data, size_t bytes, Device device,
                                   std::shared_ptr<void> keep_alive) {
  return std::make_shared<Buffer>(data, bytes, device,
                                  [keep_alive = std::move(keep_alive)](void*) {});
}

void RegisterDeviceAllocator(DeviceType type, DeviceAllocator* allocator) {
  if (type == DeviceType::kCUDA) g_cuda_allocator.store(allocator);
}

void RegisterDeviceCopier(DeviceCopier* copier) { g_copier.store(copier); }

absl::Status CopyBytes(void* dst, Device dst_device, const void* src, Device src_device,
                       size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  DeviceCopier* copier = g_copier.load();
  if (copier == nullptr) {
    return absl::UnimplementedError(absl::StrCat("cannot copy ", src_device.ToString(), " -> ",
                                                 dst_device.ToString(),
                                                 ": this build of Tessera has no CUDA backend"));
  }
  return copier->Copy(dst, dst_device, src, src_device, bytes);
}

}  // namespace tessera
