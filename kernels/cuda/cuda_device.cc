#include "kernels/cuda/cuda_device.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/base/status.h"

namespace tessera::cuda {

absl::Status ToStatus(cudaError_t error, const char* expr, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (error) {
    case cudaErrorMemoryAllocation: code = absl::StatusCode::kResourceExhausted; break;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration: code = absl::StatusCode::kInvalidArgument; break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice: code = absl::StatusCode::kUnavailable; break;
    default: break;
  }
  return absl::Status(code, absl::StrCat("CUDA error ", cudaGetErrorName(error), " (",
                                         cudaGetErrorString(error), ") in ", expr, " at ", file,
                                         ":", line));
}

absl::Status ToStatus(cublasStatus_t status, const char* expr, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED: code = absl::StatusCode::kResourceExhausted; break;
    case CUBLAS_STATUS_INVALID_VALUE: code = absl::StatusCode::kInvalidArgument; break;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: code = absl::StatusCode::kUnimplemented; break;
    case CUBLAS_STATUS_NOT_INITIALIZED: code = absl::StatusCode::kUnavailable; break;
    default: break;
  }
  return absl::Status(code, absl::StrCat("cuBLAS error ", cublasGetStatusName(status), " (",
                                         cublasGetStatusString(status), ") in ", expr, " at ",
                                         file, ":", line));
}

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

// ---- RAII handles ------------------------------------------------------------------------------

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

absl::Status Event::Record(cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, stream));
  return absl::OkStatus();
}

absl::Status Event::Synchronize() const {
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event_));
  return absl::OkStatus();
}

absl::StatusOr<bool> Event::Done() const {
  const cudaError_t err = cudaEventQuery(event_);
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  CUDA_RETURN_IF_ERROR(err);
  return true;
}

absl::StatusOr<float> Event::ElapsedMs(const Event& start, const Event& end) {
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.event_, end.event_));
  return ms;
}

absl::StatusOr<CublasLtHandle> CublasLtHandle::Create() {
  cublasLtHandle_t handle;
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return CublasLtHandle(handle);
}

CublasLtHandle& CublasLtHandle::operator=(CublasLtHandle&& other) noexcept {
  if (this != &other) {
    if (handle_) cublasLtDestroy(handle_);
    handle_ = other.handle_;
    other.handle_ = nullptr;
  }
  return *this;
}

CublasLtHandle::~CublasLtHandle() {
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<PinnedHostBuffer> PinnedHostBuffer::Create(size_t bytes) {
  void* data = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&data, std::max<size_t>(bytes, 1)));
  return PinnedHostBuffer(data, bytes);
}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFreeHost(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (data_) cudaFreeHost(data_);
}

// ---- Allocator ---------------------------------------------------------------------------------

namespace {

class CudaRawMemory final : public RawDeviceMemory {
 public:
  absl::StatusOr<void*> Malloc(int device, size_t bytes) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // OOM is not sticky; clear it so later launches do not report it
      return ToStatus(err, "cudaMalloc", __FILE__, __LINE__);
    }
    return ptr;
  }
  absl::Status Free(int device, void* ptr) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    // cudaFree synchronises the device, so no queued kernel still uses the block.
    CUDA_RETURN_IF_ERROR(cudaFree(ptr));
    return absl::OkStatus();
  }
};

}  // namespace

CachingAllocator::CachingAllocator()
    : raw_(std::make_unique<CudaRawMemory>()), core_(raw_.get()) {}

CachingAllocator& CachingAllocator::Get() {
  static CachingAllocator* allocator = new CachingAllocator();  // never destroyed: outlives tensors
  return *allocator;
}

absl::StatusOr<std::shared_ptr<Buffer>> CachingAllocator::Allocate(Device device, size_t bytes) {
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CachingAllocator: ", device.ToString(), " is not a CUDA device"));
  }
  return core_.Allocate(device, bytes);
}

// ---- Context -----------------------------------------------------------------------------------

absl::StatusOr<DeviceContext*> DeviceContext::Get(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceContext*>* contexts = new std::map<int, DeviceContext*>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = contexts->find(device);
  if (it != contexts->end()) return it->second;
  const int count = DeviceCount();
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("cuda:", device, " does not exist: this machine has ",
                                                   count, " CUDA device(s)"));
  }
  ASSIGN_OR_RETURN(Stream stream, Stream::Create(device));
  ASSIGN_OR_RETURN(CublasLtHandle handle, CublasLtHandle::Create());
  ASSIGN_OR_RETURN(std::shared_ptr<Buffer> workspace,
                   CachingAllocator::Get().Allocate(Device::Cuda(device), kCublasWorkspaceBytes));
  auto* context =
      new DeviceContext(device, std::move(stream), std::move(handle), std::move(workspace));
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&context->num_multiprocessors_,
                                              cudaDevAttrMultiProcessorCount, device));
  (*contexts)[device] = context;
  return context;
}

absl::StatusOr<DeviceContext*> Activate(int device) {
  ASSIGN_OR_RETURN(DeviceContext * context, DeviceContext::Get(device));  // checks it exists
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return context;
}

absl::Status DeviceContext::Upload(void* device_dst, const void* host_src, size_t bytes) {
  std::lock_guard<std::mutex> lock(upload_mutex_);
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  for (int i = 0; i < 2; ++i) {
    if (!staging_[i]) {
      ASSIGN_OR_RETURN(PinnedHostBuffer buf, PinnedHostBuffer::Create(kStagingChunkBytes));
      staging_[i] = std::make_unique<PinnedHostBuffer>(std::move(buf));
      ASSIGN_OR_RETURN(Event ev, Event::Create());
      staging_done_[i] = std::make_unique<Event>(std::move(ev));
      RETURN_IF_ERROR(staging_done_[i]->Record(stream()));
    }
  }
  const char* src = static_cast<const char*>(host_src);
  char* dst = static_cast<char*>(device_dst);
  int which = 0;
  for (size_t offset = 0; offset < bytes; offset += kStagingChunkBytes, which ^= 1) {
    const size_t n = std::min(kStagingChunkBytes, bytes - offset);
    RETURN_IF_ERROR(staging_done_[which]->Synchronize());  // its previous DMA has finished
    std::memcpy(staging_[which]->data(), src + offset, n);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst + offset, staging_[which]->data(), n,
                                         cudaMemcpyHostToDevice, stream()));
    RETURN_IF_ERROR(staging_done_[which]->Record(stream()));
  }
  return Synchronize();
}

absl::StatusOr<DeviceContext*> ContextFor(
    absl::string_view op,
    std::initializer_list<std::pair<absl::string_view, const Tensor*>> tensors) {
  int device = -1;
  absl::string_view first;
  for (const auto& [name, t] : tensors) {
    if (t != nullptr && t->defined() && t->device().is_cuda()) {
      device = t->device().index;
      first = name;
      break;
    }
  }
  if (device < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": no operand is a CUDA tensor"));
  }
  for (const auto& [name, t] : tensors) {
    if (t == nullptr || !t->defined()) continue;
    if (!t->device().is_cuda() || t->device().index != device) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": ", name, " is on ", t->device().ToString(), " but ", first, " is on cuda:",
          device, "; every operand must be on one CUDA device"));
    }
  }
  return Activate(device);
}

// ---- Graphs ------------------------------------------------------------------------------------

absl::StatusOr<CudaGraph> CudaGraph::Capture(int device,
                                             const std::function<absl::Status()>& body) {
  ASSIGN_OR_RETURN(DeviceContext * ctx, Activate(device));
  CachingAllocatorCore& core = CachingAllocator::Get().core();
  RETURN_IF_ERROR(core.BeginRetainingFrees(device));
  CudaGraph g;
  g.device_ = device;
  const cudaError_t begin = cudaStreamBeginCapture(ctx->stream(), cudaStreamCaptureModeRelaxed);
  absl::Status status = begin == cudaSuccess
                            ? body()
                            : ToStatus(begin, "cudaStreamBeginCapture", __FILE__, __LINE__);
  if (begin == cudaSuccess) {
    const cudaError_t end = cudaStreamEndCapture(ctx->stream(), &g.graph_);
    if (status.ok() && end != cudaSuccess) {
      status = ToStatus(end, "cudaStreamEndCapture (did the body synchronise or copy?)",
                        __FILE__, __LINE__);
    }
    if (end != cudaSuccess) cudaGetLastError();
  }
  g.retained_ = core.EndRetainingFrees(device);
  if (!status.ok()) return status;  // ~CudaGraph releases the graph and the retained blocks
  CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&g.exec_, g.graph_, 0));
  CUDA_RETURN_IF_ERROR(cudaGraphGetNodes(g.graph_, nullptr, &g.num_nodes_));
  return g;
}

CudaGraph::CudaGraph(CudaGraph&& other) noexcept { *this = std::move(other); }

CudaGraph& CudaGraph::operator=(CudaGraph&& other) noexcept {
  if (this != &other) {
    Reset();
    device_ = other.device_;
    graph_ = other.graph_;
    exec_ = other.exec_;
    num_nodes_ = other.num_nodes_;
    retained_ = std::move(other.retained_);
    other.graph_ = nullptr;
    other.exec_ = nullptr;
    other.retained_.clear();
  }
  return *this;
}

void CudaGraph::Reset() {
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
  // Replays still queued on the stream run before any later user of these blocks (one stream).
  if (!retained_.empty()) CachingAllocator::Get().core().ReleaseRetained(device_, retained_);
  retained_.clear();
}

CudaGraph::~CudaGraph() { Reset(); }

absl::Status CudaGraph::Replay() {
  if (exec_ == nullptr) return absl::FailedPreconditionError("CudaGraph: nothing captured");
  ASSIGN_OR_RETURN(DeviceContext * ctx, Activate(device_));
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, ctx->stream()));
  return absl::OkStatus();
}

// ---- Registration ------------------------------------------------------------------------------

namespace {

class CudaCopier final : public DeviceCopier {
 public:
  absl::Status Copy(void* dst, Device dst_device, const void* src, Device src_device,
                    size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
    ASSIGN_OR_RETURN(DeviceContext * context, Activate(device));
    if (dst_device.is_cuda() && src_device.is_cpu() && bytes > (size_t{1} << 20)) {
      return context->Upload(dst, src, bytes);
    }
    if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
      // Order the peer copy after both devices' queued work.
      ASSIGN_OR_RETURN(DeviceContext * src_context, DeviceContext::Get(src_device.index));
      RETURN_IF_ERROR(src_context->Synchronize());
    }
    // Unified addressing resolves the direction; the context stream orders the copy after the
    // kernels that produced the source.
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, context->stream()));
    return context->Synchronize();
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
