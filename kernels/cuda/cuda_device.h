// CUDA device layer: RAII streams, events and cuBLASLt handles, the per-device execution context,
// the caching device allocator, pinned host staging for uploads, and the backend registration.
//
// Compiled only in CUDA builds. Every CUDA call's error becomes an absl::Status with file and line
// (kernels/cuda/cuda_check.h). Execution model: every kernel and copy that Tessera issues on a
// device goes to that device's one DeviceContext stream (non-blocking), so device work is ordered
// like a program and the caching allocator may hand a freed block to the next request at once
// (the next user's work is queued behind the previous user's). Host<->device copies through
// kernels/base/device.h synchronise that stream before returning.
// Thread safety: every function here may be called from any thread; a DeviceContext's stream is
// shared, so issuing from several threads interleaves their work (correct, not concurrent).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>
#include <utility>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/base/device.h"
#include "kernels/base/tensor.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/host/caching_allocator.h"

namespace tessera::cuda {

// Number of CUDA devices; 0 when there is no driver or no GPU (never an error).
int DeviceCount();

// Owns a non-blocking cudaStream_t on one device. Move-only.
class Stream {
 public:
  static absl::StatusOr<Stream> Create(int device);
  Stream(Stream&& other) noexcept : device_(other.device_), stream_(other.stream_) {
    other.stream_ = nullptr;
  }
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  absl::Status Synchronize() const;

 private:
  Stream(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
};

// Owns a cudaEvent_t. Move-only.
class Event {
 public:
  static absl::StatusOr<Event> Create(bool timing = false);
  Event(Event&& other) noexcept : event_(other.event_) { other.event_ = nullptr; }
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();
  absl::Status Record(cudaStream_t stream);
  absl::Status Record(const Stream& stream) { return Record(stream.get()); }
  absl::Status Synchronize() const;
  // True when the recorded work has finished (cudaEventQuery).
  absl::StatusOr<bool> Done() const;
  // Milliseconds between two recorded timing events.
  static absl::StatusOr<float> ElapsedMs(const Event& start, const Event& end);
  cudaEvent_t get() const { return event_; }

 private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

// Owns a cublasLtHandle_t. Move-only.
class CublasLtHandle {
 public:
  static absl::StatusOr<CublasLtHandle> Create();
  CublasLtHandle(CublasLtHandle&& other) noexcept : handle_(other.handle_) {
    other.handle_ = nullptr;
  }
  CublasLtHandle& operator=(CublasLtHandle&& other) noexcept;
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;
  ~CublasLtHandle();
  cublasLtHandle_t get() const { return handle_; }

 private:
  explicit CublasLtHandle(cublasLtHandle_t handle) : handle_(handle) {}
  cublasLtHandle_t handle_ = nullptr;
};

// Owns page-locked host memory (cudaMallocHost). Move-only.
class PinnedHostBuffer {
 public:
  static absl::StatusOr<PinnedHostBuffer> Create(size_t bytes);
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
    other.size_ = 0;
  }
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  ~PinnedHostBuffer();
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  PinnedHostBuffer(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

// The caching allocator of kernels/cuda/host/caching_allocator.h over cudaMalloc / cudaFree (no
// managed memory). Registered with kernels/base/device.h for DeviceType::kCUDA.
class CachingAllocator final : public DeviceAllocator {
 public:
  static CachingAllocator& Get();  // process-wide, never destroyed (outlives every tensor)
  absl::StatusOr<std::shared_ptr<Buffer>> Allocate(Device device, size_t bytes) override;
  AllocatorStats Stats(int device) const { return core_.Stats(device); }
  CachingAllocatorCore& core() { return core_; }
  absl::Status EmptyCache() { return core_.EmptyCache(); }
  static size_t RoundSize(size_t bytes) { return CachingAllocatorCore::RoundSize(bytes); }

 private:
  CachingAllocator();
  std::unique_ptr<RawDeviceMemory> raw_;
  CachingAllocatorCore core_;
};

// Everything a kernel launch on one device needs: the device's stream, a cuBLASLt handle and its
// workspace, and pinned staging buffers for uploads. One per device, created on first use and
// never destroyed.
class DeviceContext {
 public:
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
  static constexpr size_t kStagingChunkBytes = size_t{16} << 20;

  // The context of `device` (created on first call; sets the calling thread's current device).
  static absl::StatusOr<DeviceContext*> Get(int device);

  int device() const { return device_; }
  int num_multiprocessors() const { return num_multiprocessors_; }
  cudaStream_t stream() const { return stream_.get(); }
  cublasLtHandle_t cublaslt() const { return cublaslt_.get(); }
  void* cublas_workspace() const { return workspace_->data(); }
  size_t cublas_workspace_bytes() const { return kCublasWorkspaceBytes; }
  absl::Status Synchronize() const { return stream_.Synchronize(); }

  // Copies `bytes` of pageable host memory to device memory through two pinned staging chunks
  // (host memcpy into one chunk overlaps the DMA of the other), then synchronises the stream.
  // The path for weight upload: pinned DMA runs at full PCIe speed where pageable copies do not.
  absl::Status Upload(void* device_dst, const void* host_src, size_t bytes);

 private:
  DeviceContext(int device, Stream stream, CublasLtHandle cublaslt,
                std::shared_ptr<Buffer> workspace)
      : device_(device),
        stream_(std::move(stream)),
        cublaslt_(std::move(cublaslt)),
        workspace_(std::move(workspace)) {}
  int device_;
  int num_multiprocessors_ = 1;
  Stream stream_;
  CublasLtHandle cublaslt_;
  std::shared_ptr<Buffer> workspace_;
  std::mutex upload_mutex_;  // one upload at a time uses the staging chunks
  std::unique_ptr<PinnedHostBuffer> staging_[2];
  std::unique_ptr<Event> staging_done_[2];
};

// A CUDA graph of work captured from a device's context stream, replayed with one launch: the
// decode step of a fixed batch shape, whose dozens of kernel launches would otherwise each cost
// host time. Capture runs `body` once with the stream in capture mode (relaxed, so a first-time
// cudaMalloc inside is allowed); body must only enqueue work on the context stream: no
// synchronisation, no host<->device copies, no reading results. Run body once outside capture
// first, so lazily created state (RoPE tables on the device, allocator blocks, cuBLASLt plans)
// exists. Every device block the captured kernels touched and that was freed during the capture
// stays reserved for the graph until it is destroyed (CachingAllocatorCore::BeginRetainingFrees).
// The graph reads and writes the exact buffers used during capture: to run it on new inputs, copy
// them into those buffers. Move-only.
class CudaGraph {
 public:
  static absl::StatusOr<CudaGraph> Capture(int device, const std::function<absl::Status()>& body);
  CudaGraph(CudaGraph&& other) noexcept;
  CudaGraph& operator=(CudaGraph&& other) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph();
  // Enqueues one replay on the context stream (returns without waiting).
  absl::Status Replay();
  size_t num_nodes() const { return num_nodes_; }

 private:
  CudaGraph() = default;
  void Reset();
  int device_ = 0;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  size_t num_nodes_ = 0;
  std::vector<CachingAllocatorCore::RetainedBlock> retained_;
};

// Makes `device` current on the calling thread and returns its context.
absl::StatusOr<DeviceContext*> Activate(int device);

// The context of the one CUDA device every defined tensor lives on (made current on the calling
// thread), or INVALID_ARGUMENT naming `op` and the operand on another device.
absl::StatusOr<DeviceContext*> ContextFor(
    absl::string_view op,
    std::initializer_list<std::pair<absl::string_view, const Tensor*>> tensors);

// Registers the caching allocator and a host<->device copier with kernels/base/device.h.
absl::Status RegisterCudaBackend();

}  // namespace tessera::cuda
