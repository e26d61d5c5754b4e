#include "kernels/cuda/cuda_device.h"

#include "absl/strings/str_cat.h"

namespace tessera::cuda {

absl::Status ToStatus(cudaError_t error, const char* expr, const char* file, int line) {
  const absl::StatusCode code = error == cudaErrorMemoryAllocation
                                    ? absl::StatusCode::kResourceExhausted
                                    : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat("CUDA error ", cudaGetErrorName(error), " (",
                                         cudaGetErrorString(error), ") in ", expr, " at ", file,
                                         ":", line));
}

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

absl::StatusOr<Stream> Stream::Create(int device) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaStream_t stream;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(device, stream);
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_) cudaStreamDestroy(stream_);
    device_ = other.device_;
    stream_ = other.stream_;
    other.stream_ = nullptr;
  }
  return *this;
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}

absl::Status Stream::Synchronize() const {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<Event> Event::Create(bool timing) {
  cudaEvent_t event;
  CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return Event(event);
}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_) cudaEventDestroy(event_);
    event_ = other.event_;
    other.event_ = nullptr;
  }
  return *this;
}

Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}

absl::Status Event::Record(const Stream& stream) {
  CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, stream.get()));
  return absl::OkStatus();
}

absl::Status Event::Synchronize() const {
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event_));
  return absl::OkStatus();
}

absl::StatusOr<float> Event::ElapsedMs(const Event& start, const Event& end) {
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

CachingAllocator& CachingAllocator::Get() {
  static CachingAllocator* allocator = new CachingAllocator();  // never destroyed: outlives tensors
  return *allocator;
}

size_t CachingAllocator::RoundSize(size_t bytes) {
  if (bytes == 0) return 512;
  if (bytes < (1u << 20)) return (bytes + 511) / 512 * 512;
  const size_t two_mib = size_t{2} << 20;
  return (bytes + two_mib - 1) / two_mib * two_mib;
}

absl::StatusOr<std::shared_ptr<Buffer>> CachingAllocator::Allocate(Device device, size_t bytes) {
  const size_t rounded = RoundSize(bytes);
  void* ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    AllocatorStats& stats = stats_[device.index];
    ++stats.num_allocs;
    auto& free_list = free_blocks_[device.index];
    auto it = free_list.find(rounded);
    if (it != free_list.end()) {
      ptr = it->second;
      free_list.erase(it);
      ++stats.num_cache_hits;
    }
  }
  if (ptr == nullptr) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device.index));
    cudaError_t err = cudaMalloc(&ptr, rounded);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      if (absl::Status s = EmptyCache(); !s.ok()) return s;
      err = cudaMalloc(&ptr, rounded);
    }
    if (err != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cudaMalloc of ", rounded, " bytes on ", device.ToString(), " failed: ",
          cudaGetErrorString(err)));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    AllocatorStats& stats = stats_[device.index];
    ++stats.num_cuda_mallocs;
    stats.reserved_bytes += rounded;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    AllocatorStats& stats = stats_[device.index];
    stats.allocated_bytes += rounded;
    stats.peak_allocated_bytes = std::max(stats.peak_allocated_bytes, stats.allocated_bytes);
  }
  const int index = device.index;
  return std::make_shared<Buffer>(ptr, bytes, device,
                                  [this, index, rounded](void* p) { Release(index, p, rounded); });
}

void CachingAllocator::Release(int device, void* ptr, size_t rounded) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_[device].allocated_bytes -= rounded;
  free_blocks_[device].emplace(rounded, ptr);
}

AllocatorStats CachingAllocator::Stats(int device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = stats_.find(device);
  return it == stats_.end() ? AllocatorStats{} : it->second;
}

absl::Status CachingAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [device, blocks] : free_blocks_) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    for (auto& [size, ptr] : blocks) {
      CUDA_RETURN_IF_ERROR(cudaFree(ptr));
      stats_[device].reserved_bytes -= size;
    }
    blocks.clear();
  }
  return absl::OkStatus();
}

namespace {

class CudaCopier final : public DeviceCopier {
 public:
  absl::Status Copy(void* dst, Device dst_device, const void* src, Device src_device,
                    size_t bytes) override {
    cudaMemcpyKind kind = cudaMemcpyDefault;  // unified addressing resolves the direction
    if (dst_device.is_cuda()) CUDA_RETURN_IF_ERROR(cudaSetDevice(dst_device.index));
    else if (src_device.is_cuda()) CUDA_RETURN_IF_ERROR(cudaSetDevice(src_device.index));
    CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, src, bytes, kind));
    return absl::OkStatus();
  }
};

}  // namespace

absl::Status RegisterCudaBackend() {
  static CudaCopier* copier = new CudaCopier();
  RegisterDeviceAllocator(DeviceType::kCUDA, &CachingAllocator::Get());
  RegisterDeviceCopier(copier);
  return absl::OkStatus();
}

}  // namespace tessera::cuda
