#include "parallel/nccl_communicator.h"

#include "absl/strings/str_cat.h"

#ifdef TESSERA_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kernels/base/status.h"
#include "kernels/cuda/cuda_device.h"
#endif

namespace tessera {

#ifndef TESSERA_WITH_CUDA

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommOptions& options) {
  return absl::UnimplementedError(absl::StrCat(
      "NCCL communicator for group '", options.name,
      "': this tessera was built without CUDA/NCCL; rebuild with -DTESSERA_CUDA=ON or use Gloo"));
}

#else  // TESSERA_WITH_CUDA

namespace {

absl::Status NcclStatus(ncclResult_t result, absl::string_view what, absl::string_view group,
                        int rank, const char* file, int line) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage: code = absl::StatusCode::kInvalidArgument; break;
    case ncclRemoteError:
    case ncclSystemError: code = absl::StatusCode::kUnavailable; break;
    default: break;
  }
  return absl::Status(code, absl::StrCat("NCCL error ", ncclGetErrorString(result), " in ", what,
                                         " (group '", group, "', rank ", rank, ") at ", file, ":",
                                         line));
}

absl::StatusOr<ncclDataType_t> ReductionType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kI8: return ncclInt8;
    case DType::kU8: return ncclUint8;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL reductions do not support dtype ", DTypeName(dtype)));
  }
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// The communicator state shared by the Communicator object and its outstanding Works.
struct NcclState {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int size = 1;
  int device = 0;
  std::string name;
  std::shared_ptr<KvStore> store;
  cuda::DeviceContext* ctx = nullptr;
  mutable absl::Mutex mutex;
  absl::Duration timeout ABSL_GUARDED_BY(mutex);
  absl::Status broken ABSL_GUARDED_BY(mutex);
  bool aborted ABSL_GUARDED_BY(mutex) = false;

  absl::Duration Timeout() const {
    absl::MutexLock lock(&mutex);
    return timeout;
  }
  absl::Status Health() const {
    absl::MutexLock lock(&mutex);
    return broken;
  }
  // Records the first error and aborts the communicator (every later op fails fast).
  absl::Status Break(absl::Status error) {
    absl::MutexLock lock(&mutex);
    if (broken.ok()) broken = error;
    if (!aborted && comm != nullptr) {
      ncclCommAbort(comm);
      aborted = true;
    }
    return error;
  }
  // After the owner destroyed the handle: later Works report `error` and never use it.
  void Forget(absl::Status error) {
    absl::MutexLock lock(&mutex);
    if (broken.ok()) broken = error;
    aborted = true;
    comm = nullptr;
  }
  absl::Status CheckUsable(absl::string_view op) const {
    absl::Status h = Health();
    if (h.ok()) return h;
    return absl::FailedPreconditionError(absl::StrCat(op, " on broken NCCL group '", name,
                                                      "' (rank ", rank, "): ", h.message()));
  }
  // Polls a non-blocking call's enqueue until it leaves ncclInProgress.
  absl::Status Settle(ncclResult_t result, absl::string_view what, const char* file, int line) {
    const absl::Time deadline = absl::Now() + Timeout();
    while (result == ncclInProgress) {
      if (absl::Now() > deadline) {
        return Break(absl::DeadlineExceededError(absl::StrCat(
            what, " did not finish enqueueing within the timeout (group '", name, "', rank ",
            rank, ")")));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      ncclCommGetAsyncError(comm, &result);
    }
    if (result != ncclSuccess) return Break(NcclStatus(result, what, name, rank, file, line));
    return absl::OkStatus();
  }
};

#define NCCL_SETTLE(state, expr) RETURN_IF_ERROR((state)->Settle((expr), #expr, __FILE__, __LINE__))

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, std::string op, cuda::Event event,
           std::vector<Tensor> keep_alive)
      : state_(std::move(state)),
        op_(std::move(op)),
        event_(std::move(event)),
        keep_alive_(std::move(keep_alive)),
        op_deadline_(absl::Now() + state_->Timeout()) {}
  ~NcclWork() override { Wait(state_->Timeout()).IgnoreError(); }

  absl::Status Wait(absl::Duration timeout) override {
    if (done_) return status_;
    const absl::Time wait_deadline = absl::Now() + timeout;
    for (;;) {
      const cudaError_t q = cudaEventQuery(event_.get());
      if (q == cudaSuccess) return Finish(absl::OkStatus());
      if (q != cudaErrorNotReady) {
        return Finish(state_->Break(cuda::ToStatus(q, "cudaEventQuery", __FILE__, __LINE__)));
      }
      absl::Status health = state_->Health();
      if (!health.ok()) {
        return Finish(absl::UnavailableError(absl::StrCat(op_, " failed: ", health.message())));
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(state_->comm, &async);  // health() above was OK: comm is live
      if (async != ncclSuccess && async != ncclInProgress) {
        return Finish(state_->Break(absl::UnavailableError(
            absl::StrCat(op_, " on NCCL group '", state_->name, "' (rank ", state_->rank,
                         ") failed: ", ncclGetErrorString(async), " (a peer died?)"))));
      }
      const absl::Time now = absl::Now();
      if (now > op_deadline_) {
        return Finish(state_->Break(absl::DeadlineExceededError(
            absl::StrCat(op_, " on NCCL group '", state_->name, "' (rank ", state_->rank,
                         ") did not finish within ", absl::FormatDuration(state_->Timeout()),
                         "; the communicator was aborted"))));
      }
      if (now > wait_deadline) {
        return absl::DeadlineExceededError(absl::StrCat(op_, " still running"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  absl::Status Finish(absl::Status s) {
    done_ = true;
    status_ = s;
    keep_alive_.clear();
    return s;
  }
  std::shared_ptr<NcclState> state_;
  std::string op_;
  cuda::Event event_;
  std::vector<Tensor> keep_alive_;
  absl::Time op_deadline_;
  bool done_ = false;
  absl::Status status_;
};

absl::StatusOr<ncclComm_t> InitComm(const std::shared_ptr<NcclState>& s,
                                    const ncclUniqueId& id) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(s->device));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t result = ncclCommInitRankConfig(&comm, s->size, id, s->rank, &config);
  const absl::Time deadline = absl::Now() + s->Timeout();
  while (result == ncclInProgress || (result == ncclSuccess && comm != nullptr)) {
    ncclCommGetAsyncError(comm, &result);
    if (result != ncclInProgress) break;
    if (absl::Now() > deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(absl::StrCat(
          "NCCL group '", s->name, "': rank ", s->rank, " of ", s->size,
          " did not finish initialisation within ", absl::FormatDuration(s->Timeout()),
          " (are all ranks started and reachable?)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (result != ncclSuccess) {
    if (comm != nullptr) ncclCommAbort(comm);
    return NcclStatus(result, "ncclCommInitRankConfig", s->name, s->rank, __FILE__, __LINE__);
  }
  return comm;
}

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<NcclState> state) : state_(std::move(state)) {}
  ~NcclCommunicator() override {
    bool aborted;
    {
      absl::MutexLock lock(&state_->mutex);
      aborted = state_->aborted;
    }
    if (aborted || state_->comm == nullptr) return;
    // Finalize flushes outstanding work; bounded, then destroy (abort when it does not finish).
    ncclResult_t r = ncclCommFinalize(state_->comm);
    const absl::Time deadline = absl::Now() + state_->Timeout();
    while (r == ncclInProgress && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      ncclCommGetAsyncError(state_->comm, &r);
    }
    if (r == ncclSuccess) {
      ncclCommDestroy(state_->comm);
    } else {
      ncclCommAbort(state_->comm);
    }
    // Works that outlive the communicator must not touch the destroyed handle.
    state_->Forget(absl::CancelledError(
        absl::StrCat("NCCL group '", state_->name, "' was destroyed")));
  }

  int rank() const override { return state_->rank; }
  int size() const override { return state_->size; }
  const std::string& name() const override { return state_->name; }
  absl::string_view backend() const override { return "nccl"; }
  absl::Duration timeout() const override { return state_->Timeout(); }
  void SetTimeout(absl::Duration timeout) override {
    absl::MutexLock lock(&state_->mutex);
    state_->timeout = timeout;
  }
  absl::Status health() const override { return state_->Health(); }

  std::unique_ptr<Work> AllReduceAsync(const Tensor& inout, ReduceOp op) override {
    return Issue("AllReduce", {inout}, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(ncclDataType_t t, ReductionType(inout.dtype()));
      NCCL_SETTLE(state_, ncclAllReduce(inout.raw_data(), inout.raw_data(), inout.numel(), t,
                                        ToNccl(op), state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllGatherAsync(const Tensor& in, const Tensor& out) override {
    return Issue("AllGather", {in, out}, [&]() -> absl::Status {
      RETURN_IF_ERROR(SameDtype("AllGather", in, out));
      if (out.numel() != in.numel() * size()) {
        return absl::InvalidArgumentError(absl::StrCat("AllGather: out ", out.DebugString(),
                                                       " must hold size x in ", in.DebugString()));
      }
      NCCL_SETTLE(state_, ncclAllGather(in.raw_data(), out.raw_data(), in.nbytes(), ncclUint8,
                                        state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllGatherVAsync(const Tensor& in, const Tensor& out,
                                        absl::Span<const int64_t> out_splits) override {
    std::vector<int64_t> splits(out_splits.begin(), out_splits.end());
    return Issue("AllGatherV", {in, out}, [&]() -> absl::Status {
      RETURN_IF_ERROR(SameDtype("AllGatherV", in, out));
      ASSIGN_OR_RETURN(std::vector<int64_t> offsets, RowOffsets("AllGatherV", out, splits));
      const size_t row_bytes = RowBytes(out);
      if (in.nbytes() != splits[rank()] * row_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("AllGatherV: in ", in.DebugString(),
                                                       " must have out_splits[rank] = ",
                                                       splits[rank()], " rows"));
      }
      NCCL_SETTLE(state_, ncclGroupStart());
      for (int r = 0; r < size(); ++r) {
        if (splits[r] == 0) continue;
        char* dst = static_cast<char*>(out.raw_data()) + offsets[r] * row_bytes;
        NCCL_SETTLE(state_, ncclBroadcast(r == rank() ? in.raw_data() : dst, dst,
                                          splits[r] * row_bytes, ncclUint8, r, state_->comm,
                                          stream()));
      }
      NCCL_SETTLE(state_, ncclGroupEnd());
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> ReduceScatterAsync(const Tensor& in, const Tensor& out,
                                           ReduceOp op) override {
    return Issue("ReduceScatter", {in, out}, [&]() -> absl::Status {
      RETURN_IF_ERROR(SameDtype("ReduceScatter", in, out));
      ASSIGN_OR_RETURN(ncclDataType_t t, ReductionType(in.dtype()));
      if (in.numel() != out.numel() * size()) {
        return absl::InvalidArgumentError(absl::StrCat("ReduceScatter: in ", in.DebugString(),
                                                       " must hold size x out ",
                                                       out.DebugString()));
      }
      NCCL_SETTLE(state_, ncclReduceScatter(in.raw_data(), out.raw_data(), out.numel(), t,
                                            ToNccl(op), state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> AllToAllVAsync(const Tensor& in, absl::Span<const int64_t> in_splits,
                                       const Tensor& out,
                                       absl::Span<const int64_t> out_splits) override {
    std::vector<int64_t> ins(in_splits.begin(), in_splits.end());
    std::vector<int64_t> outs(out_splits.begin(), out_splits.end());
    return Issue("AllToAllV", {in, out}, [&]() -> absl::Status {
      RETURN_IF_ERROR(SameDtype("AllToAllV", in, out));
      ASSIGN_OR_RETURN(std::vector<int64_t> in_off, RowOffsets("AllToAllV in", in, ins));
      ASSIGN_OR_RETURN(std::vector<int64_t> out_off, RowOffsets("AllToAllV out", out, outs));
      const size_t row_bytes = RowBytes(in);
      if (RowBytes(out) != row_bytes) {
        return absl::InvalidArgumentError("AllToAllV: in and out rows differ in size");
      }
      const char* src = static_cast<const char*>(in.raw_data());
      char* dst = static_cast<char*>(out.raw_data());
      if (ins[rank()] != outs[rank()]) {
        return absl::InvalidArgumentError("AllToAllV: in_splits[rank] != out_splits[rank]");
      }
      if (ins[rank()] > 0) {
        CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst + out_off[rank()] * row_bytes,
                                             src + in_off[rank()] * row_bytes,
                                             ins[rank()] * row_bytes, cudaMemcpyDeviceToDevice,
                                             stream()));
      }
      NCCL_SETTLE(state_, ncclGroupStart());
      for (int r = 0; r < size(); ++r) {
        if (r == rank()) continue;
        if (ins[r] > 0) {
          NCCL_SETTLE(state_, ncclSend(src + in_off[r] * row_bytes, ins[r] * row_bytes,
                                       ncclUint8, r, state_->comm, stream()));
        }
        if (outs[r] > 0) {
          NCCL_SETTLE(state_, ncclRecv(dst + out_off[r] * row_bytes, outs[r] * row_bytes,
                                       ncclUint8, r, state_->comm, stream()));
        }
      }
      NCCL_SETTLE(state_, ncclGroupEnd());
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> BroadcastAsync(const Tensor& tensor, int root) override {
    return Issue("Broadcast", {tensor}, [&]() -> absl::Status {
      RETURN_IF_ERROR(CheckRank("Broadcast root", root));
      NCCL_SETTLE(state_, ncclBroadcast(tensor.raw_data(), tensor.raw_data(), tensor.nbytes(),
                                        ncclUint8, root, state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> BarrierAsync() override {
    absl::StatusOr<Tensor> token = Tensor::Zeros({1}, DType::kI32, Device::Cuda(state_->device));
    if (!token.ok()) return CompletedWork(token.status());
    return AllReduceAsync(*token, ReduceOp::kSum);
  }

  std::unique_ptr<Work> SendAsync(const Tensor& tensor, int dst, uint32_t /*tag*/) override {
    return Issue("Send", {tensor}, [&]() -> absl::Status {
      RETURN_IF_ERROR(CheckRank("Send destination", dst));
      NCCL_SETTLE(state_, ncclSend(tensor.raw_data(), tensor.nbytes(), ncclUint8, dst,
                                   state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  std::unique_ptr<Work> RecvAsync(const Tensor& tensor, int src, uint32_t /*tag*/) override {
    return Issue("Recv", {tensor}, [&]() -> absl::Status {
      RETURN_IF_ERROR(CheckRank("Recv source", src));
      NCCL_SETTLE(state_, ncclRecv(tensor.raw_data(), tensor.nbytes(), ncclUint8, src,
                                   state_->comm, stream()));
      return absl::OkStatus();
    });
  }

  absl::StatusOr<std::unique_ptr<Communicator>> NewGroup(absl::Span<const int> ranks,
                                                         absl::string_view name) override {
    RETURN_IF_ERROR(state_->CheckUsable("NewGroup"));
    int my_index = -1;
    for (size_t i = 0; i < ranks.size(); ++i) {
      RETURN_IF_ERROR(CheckRank("NewGroup member", ranks[i]));
      if (ranks[i] == rank()) my_index = static_cast<int>(i);
    }
    if (my_index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("NewGroup: rank ", rank(),
                                                     " is not a member of [",
                                                     absl::StrJoin(ranks, ","), "]"));
    }
    const std::string list = absl::StrJoin(ranks, ",");
    int generation;
    {
      std::lock_guard<std::mutex> lock(groups_mutex_);
      generation = groups_built_[list]++;
    }
    NcclCommOptions options;
    options.store = state_->store;
    options.rank = my_index;
    options.size = static_cast<int>(ranks.size());
    options.device = state_->device;
    options.name = name.empty() ? absl::StrCat(state_->name, "/g[", list, "]#", generation)
                                : absl::StrCat(state_->name, "/", name, "#", generation);
    options.timeout = timeout();
    return CreateNcclCommunicator(options);
  }

 private:
  cudaStream_t stream() const { return state_->ctx->stream(); }

  absl::Status CheckRank(absl::string_view what, int r) const {
    if (r < 0 || r >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", r, " is outside the group of ", size(), " ranks"));
    }
    return absl::OkStatus();
  }
  static absl::Status SameDtype(absl::string_view op, const Tensor& a, const Tensor& b) {
    if (a.dtype() != b.dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": in ", a.DebugString(), " and out ", b.DebugString(), " differ"));
    }
    return absl::OkStatus();
  }
  static size_t RowBytes(const Tensor& t) {
    return t.ndim() == 0 || t.dim(0) == 0 ? t.element_size()
                                          : t.nbytes() / static_cast<size_t>(t.dim(0));
  }
  absl::StatusOr<std::vector<int64_t>> RowOffsets(absl::string_view op, const Tensor& t,
                                                  const std::vector<int64_t>& splits) const {
    if (static_cast<int>(splits.size()) != size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", splits.size(), " splits for ", size(), " ranks"));
    }
    std::vector<int64_t> offsets(size());
    int64_t total = 0;
    for (int r = 0; r < size(); ++r) {
      if (splits[r] < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": negative split"));
      offsets[r] = total;
      total += splits[r];
    }
    if (t.ndim() == 0 || t.dim(0) != total) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": tensor ", t.DebugString(),
                                                     " must have ", total, " rows"));
    }
    return offsets;
  }

  // Validates the tensors, runs `enqueue` on the stream and returns a Work for it.
  template <typename F>
  std::unique_ptr<Work> Issue(absl::string_view op, std::vector<Tensor> tensors, F&& enqueue) {
    if (absl::Status s = state_->CheckUsable(op); !s.ok()) return CompletedWork(s);
    for (const Tensor& t : tensors) {
      if (!t.defined() || !t.device().is_cuda() || t.device().index != state_->device ||
          !t.is_contiguous()) {
        return CompletedWork(absl::InvalidArgumentError(absl::StrCat(
            op, " on NCCL group '", state_->name, "': tensor ",
            t.defined() ? t.DebugString() : "undefined", " must be contiguous on cuda:",
            state_->device)));
      }
    }
    if (cudaSetDevice(state_->device) != cudaSuccess) {
      return CompletedWork(absl::InternalError("cudaSetDevice failed"));
    }
    if (absl::Status s = enqueue(); !s.ok()) return CompletedWork(s);
    absl::StatusOr<cuda::Event> event = cuda::Event::Create();
    if (!event.ok()) return CompletedWork(event.status());
    if (absl::Status s = event->Record(stream()); !s.ok()) return CompletedWork(s);
    return std::make_unique<NcclWork>(state_, std::string(op), std::move(*event),
                                      std::move(tensors));
  }

  std::shared_ptr<NcclState> state_;
  std::mutex groups_mutex_;
  std::map<std::string, int> groups_built_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommOptions& options) {
  if (options.store == nullptr) {
    return absl::InvalidArgumentError("CreateNcclCommunicator: a KvStore is required");
  }
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat("CreateNcclCommunicator: rank ", options.rank,
                                                   " outside a group of ", options.size));
  }
  auto state = std::make_shared<NcclState>();
  state->rank = options.rank;
  state->size = options.size;
  state->device = options.device;
  state->name = options.name;
  state->store = options.store;
  state->timeout = options.timeout;
  absl::StatusOr<cuda::DeviceContext*> ctx = cuda::Activate(options.device);
  if (!ctx.ok()) {
    return Annotate(ctx.status(), absl::StrCat("NCCL group '", options.name, "' rank ",
                                               options.rank));
  }
  state->ctx = *ctx;
  ncclUniqueId id;
  const std::string key = absl::StrCat(options.name, "/nccl_id");
  if (options.rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return NcclStatus(r, "ncclGetUniqueId", options.name, 0, __FILE__, __LINE__);
    }
    RETURN_IF_ERROR(options.store->Set(key, absl::string_view(id.internal, sizeof(id.internal))));
  } else {
    absl::StatusOr<std::string> value = options.store->Get(key, options.timeout);
    if (!value.ok()) {
      return Annotate(value.status(), absl::StrCat("NCCL group '", options.name, "' rank ",
                                                   options.rank, ": waiting for rank 0's id"));
    }
    if (value->size() != sizeof(id.internal)) {
      return absl::DataLossError(absl::StrCat("NCCL group '", options.name, "': the id under '",
                                              key, "' has ", value->size(), " bytes, expected ",
                                              sizeof(id.internal)));
    }
    std::memcpy(id.internal, value->data(), sizeof(id.internal));
  }
  ASSIGN_OR_RETURN(state->comm, InitComm(state, id));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(state)));
}

#endif  // TESSERA_WITH_CUDA

}  // namespace tessera
