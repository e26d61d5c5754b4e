#include "parallel/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "kernels/base/logging.h"
#include "kernels/base/status.h"
#include "parallel/comm_stats.h"

namespace tessera {
namespace {

using Millis = std::chrono::milliseconds;

// Slot prefixes of the algorithms implemented here (Gloo's own use 0x01..0x08).
constexpr uint8_t kAllToAllVSlotPrefix = 0x40;
constexpr uint8_t kReduceScatterSlotPrefix = 0x41;
constexpr uint8_t kP2pSlotPrefix = 0x42;

Millis ToMillis(absl::Duration d) {
  return Millis(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

// Gloo reports errors as exceptions: IoException for transport errors and timeouts,
// EnforceNotMet for violated preconditions. Timeouts say "Timed out".
absl::Status ClassifyIoError(const std::string& what) {
  if (absl::StrContains(what, "imed out") || absl::StrContains(what, "imeout")) {
    return absl::DeadlineExceededError(what);
  }
  return absl::UnavailableError(what);
}

template <typename F>
absl::Status CallGloo(F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const gloo::IoException& e) {
    return ClassifyIoError(e.what());
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat("gloo: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("gloo: ", e.what()));
  }
}

// The rendezvous store as Gloo sees it. Gloo has no error channel other than exceptions, so a
// store failure is thrown as gloo::IoException and caught by CallGloo around connectFullMesh.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(KvStore* store, absl::Duration timeout) : store_(store), timeout_(timeout) {}

  // The first store error (Gloo only sees its text), so the caller keeps its status code.
  const absl::Status& first_error() const { return first_error_; }

  void set(const std::string& key, const std::vector<char>& data) override {
    Throw(store_->Set(key, absl::string_view(data.data(), data.size())));
  }
  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::string> value = store_->Get(key, timeout_);
    Throw(value.status());
    return std::vector<char>(value->begin(), value->end());
  }
  void wait(const std::vector<std::string>& keys) override { Throw(store_->Wait(keys, timeout_)); }
  void wait(const std::vector<std::string>& keys, const Millis& timeout) override {
    absl::Duration t = timeout.count() > 0 ? absl::Milliseconds(timeout.count()) : timeout_;
    Throw(store_->Wait(keys, std::min(t, timeout_)));
  }

 private:
  void Throw(const absl::Status& status) {
    if (status.ok()) return;
    if (first_error_.ok()) first_error_ = status;
    throw gloo::IoException(std::string(status.ToString()));
  }
  KvStore* store_;
  absl::Status first_error_;
  absl::Duration timeout_;
};

// Every "[host]:port" in a Gloo error message.
std::vector<std::string> AddressesIn(absl::string_view message) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = message.find('[', pos)) != absl::string_view::npos) {
    size_t close = message.find("]:", pos);
    if (close == absl::string_view::npos) break;
    size_t end = close + 2;
    while (end < message.size() && message[end] >= '0' && message[end] <= '9') ++end;
    if (end > close + 2) out.emplace_back(message.substr(pos, end - pos));
    pos = pos + 1;
  }
  return out;
}

void IgnoreSigpipeIfDefault() {
  struct sigaction old;
  if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

// ---- Reductions --------------------------------------------------------------------------------

using ReduceFn = std::function<void(void*, const void*, const void*, size_t)>;

template <typename T>
inline T Add(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));  // wraps like NCCL
  } else {
    return a + b;
  }
}
template <typename T>
inline T Max(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return a + b;  // NaN propagates
  }
  return a < b ? b : a;
}
template <typename T>
inline T Min(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return a + b;
  }
  return b < a ? b : a;
}

template <typename T>
ReduceFn Native(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return [](void* o, const void* a, const void* b, size_t n) {
        T* out = static_cast<T*>(o);
        const T* x = static_cast<const T*>(a);
        const T* y = static_cast<const T*>(b);
        for (size_t i = 0; i < n; ++i) out[i] = Add(x[i], y[i]);
      };
    case ReduceOp::kMax:
      return [](void* o, const void* a, const void* b, size_t n) {
        T* out = static_cast<T*>(o);
        const T* x = static_cast<const T*>(a);
        const T* y = static_cast<const T*>(b);
        for (size_t i = 0; i < n; ++i) out[i] = Max(x[i], y[i]);
      };
    case ReduceOp::kMin:
      return [](void* o, const void* a, const void* b, size_t n) {
        T* out = static_cast<T*>(o);
        const T* x = static_cast<const T*>(a);
        const T* y = static_cast<const T*>(b);
        for (size_t i = 0; i < n; ++i) out[i] = Min(x[i], y[i]);
      };
  }
  return nullptr;
}

// 16-bit floats: each combine in f32, rounded back (NCCL's per-hop semantics).
template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
ReduceFn Half(ReduceOp op) {
  return [op](void* o, const void* a, const void* b, size_t n) {
    uint16_t* out = static_cast<uint16_t*>(o);
    const uint16_t* x = static_cast<const uint16_t*>(a);
    const uint16_t* y = static_cast<const uint16_t*>(b);
    switch (op) {
      case ReduceOp::kSum:
        for (size_t i = 0; i < n; ++i) out[i] = FromF(ToF(x[i]) + ToF(y[i]));
        break;
      case ReduceOp::kMax:
        for (size_t i = 0; i < n; ++i) out[i] = FromF(Max(ToF(x[i]), ToF(y[i])));
        break;
      case ReduceOp::kMin:
        for (size_t i = 0; i < n; ++i) out[i] = FromF(Min(ToF(x[i]), ToF(y[i])));
        break;
    }
  };
}

absl::StatusOr<ReduceFn> MakeReduceFn(DType dtype, ReduceOp op, absl::string_view what) {
  switch (dtype) {
    case DType::kF32:
      return Native<float>(op);
    case DType::kBF16:
      return Half<Bf16ToFloat, FloatToBf16>(op);
    case DType::kF16:
      return Half<F16ToFloat, FloatToF16>(op);
    case DType::kI32:
      return Native<int32_t>(op);
    case DType::kI64:
      return Native<int64_t>(op);
    case DType::kI8:
      return Native<int8_t>(op);
    case DType::kU8:
      return Native<uint8_t>(op);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": cannot reduce ", DTypeName(dtype),
                       " tensors (reductions take f32, bf16, f16, i32, i64, i8, u8)"));
  }
}

// ---- Argument checks ---------------------------------------------------------------------------

absl::Status CheckTensor(const Tensor& t, absl::string_view op, absl::string_view what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " is undefined"));
  if (!t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " ", t.DebugString(),
                     " is not a host tensor; GlooCommunicator moves host memory (use the NCCL "
                     "communicator for device tensors)"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " ", t.DebugString(), " is not contiguous (Clone() it)"));
  }
  return absl::OkStatus();
}

char kEmptyByte = 0;
char* BytesOf(const Tensor& t) {
  return t.nbytes() == 0 ? &kEmptyByte : static_cast<char*>(t.raw_data());
}

// Product of the dimensions after the first (elements per row).
int64_t RowElements(const Tensor& t) {
  int64_t n = 1;
  for (int d = 1; d < t.ndim(); ++d) n *= t.dim(d);
  return n;
}

uint64_t Fnv1a(absl::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// ---- Shared state of one group (outlives the communicator while Work handles hold it) ---------

struct GroupState {
  std::string name;
  int rank = 0;
  int size = 1;
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::shared_ptr<KvStore> store;  // this group's namespace
  std::atomic<int64_t> timeout_ms{30000};

  mutable absl::Mutex mu;
  absl::Status broken ABSL_GUARDED_BY(mu);
  bool peers_fetched ABSL_GUARDED_BY(mu) = false;
  // The connection addresses rank j published, as Gloo prints them ("[ip]:port").
  std::vector<std::vector<std::string>> peer_addrs ABSL_GUARDED_BY(mu);

  absl::Duration timeout() const { return absl::Milliseconds(timeout_ms.load()); }

  std::string Describe(absl::string_view op) const {
    return absl::StrCat(op, " on group '", name, "' (rank ", rank, " of ", size, ")");
  }

  absl::Status Health() const {
    absl::MutexLock l(&mu);
    return broken;
  }

  // The rank whose connection address appears in a Gloo error message, or -1. Reads the
  // addresses the peers published (once, on the first error).
  int ResolvePeer(absl::string_view message) {
    std::vector<std::string> in_message = AddressesIn(message);
    if (in_message.empty()) return -1;
    absl::MutexLock l(&mu);
    if (!peers_fetched) {
      peers_fetched = true;
      peer_addrs.assign(size, {});
      for (int j = 0; j < size; ++j) {
        if (j == rank) continue;
        absl::StatusOr<std::string> v =
            store->Get(absl::StrCat("sockaddrs/", j), absl::Milliseconds(200));
        if (v.ok()) peer_addrs[j] = absl::StrSplit(*v, '\n', absl::SkipEmpty());
      }
    }
    for (int j = 0; j < size; ++j) {
      for (const std::string& a : peer_addrs[j]) {
        for (const std::string& m : in_message) {
          if (a == m) return j;
        }
      }
    }
    return -1;
  }

  // Turns a transport failure of `op` into the error the caller sees, and breaks the group: the
  // connections close so every other rank's pending op fails at once.
  absl::Status Fail(absl::string_view op, const absl::Status& cause, int peer) {
    if (cause.ok()) return cause;
    if (peer < 0) peer = ResolvePeer(cause.message());
    std::string why;
    if (absl::IsDeadlineExceeded(cause)) {
      why = absl::StrCat(" after the ", absl::FormatDuration(timeout()),
                         " timeout (the peer is dead or hung, or the ranks issued different "
                         "collectives)");
    } else if (absl::IsUnavailable(cause)) {
      why = " (the peer's process died or closed the connection)";
    }
    absl::Status status(cause.code(),
                        absl::StrCat(Describe(op), " failed",
                                     peer >= 0 ? absl::StrCat(" with peer rank ", peer) : "", why,
                                     ": ", cause.message()));
    bool first = false;
    {
      absl::MutexLock l(&mu);
      if (broken.ok()) {
        broken = status;
        first = true;
      }
    }
    if (first) {
      LOG(ERROR) << status.message() << "; closing the group's connections";
      (void)CallGloo([&] { context->closeConnections(); });
    }
    return status;
  }

  // Fails fast when the group is broken.
  absl::Status CheckUsable(absl::string_view op) const {
    absl::Status h = Health();
    if (h.ok()) return h;
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(op), ": the communicator is broken since an earlier failure "
                                   "(rebuild the group): ",
                     h.message()));
  }
};

// One prepared collective: validated arguments bound into `run`.
struct Op {
  std::string name;
  std::function<absl::Status(GroupState& st, uint32_t tag, Millis timeout)> run;
};

// ---- Work handles ------------------------------------------------------------------------------

struct WorkState {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);

  void Complete(absl::Status s) {
    absl::MutexLock l(&mu);
    status = std::move(s);
    done = true;
  }
  absl::Status Wait(absl::Duration timeout, absl::string_view op) {
    absl::MutexLock l(&mu);
    if (!mu.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat(op, " is still running after ", absl::FormatDuration(timeout),
                       " (Wait again; the op itself fails at the communicator timeout)"));
    }
    return status;
  }
};

class AsyncWork : public Work {
 public:
  AsyncWork(std::shared_ptr<WorkState> state, std::string op)
      : state_(std::move(state)), op_(std::move(op)) {}
  ~AsyncWork() override { (void)state_->Wait(absl::InfiniteDuration(), op_); }
  absl::Status Wait(absl::Duration timeout) override {
    CommTimer timer(CommOp::kAsyncWait, 0);
    return state_->Wait(timeout, op_);
  }

 private:
  std::shared_ptr<WorkState> state_;
  std::string op_;
};

// A posted send or recv. The Gloo wait runs on the caller's thread when the caller is willing to
// wait out the op's deadline, else on a helper thread (a Gloo wait that times out poisons the
// whole context, so it is only ever given the op's own deadline).
class P2pWork : public Work {
 public:
  P2pWork(std::shared_ptr<GroupState> st, std::string op, Tensor tensor,
          std::unique_ptr<gloo::transport::UnboundBuffer> buf, bool is_send, int peer,
          absl::Time deadline)
      : st_(std::move(st)),
        op_(std::move(op)),
        tensor_(std::move(tensor)),
        buf_(std::move(buf)),
        is_send_(is_send),
        peer_(peer),
        deadline_(deadline) {}

  ~P2pWork() override {
    (void)Wait(absl::InfiniteDuration());
    if (waiter_.joinable()) waiter_.join();
  }

  absl::Status Wait(absl::Duration timeout) override {
    CommTimer timer(is_send_ ? CommOp::kSend : CommOp::kRecv, tensor_.nbytes());
    bool run_inline = false;
    {
      absl::MutexLock l(&mu_);
      if (done_) {
        timer.Cancel();  // already waited for (the destructor's Wait)
        return status_;
      }
      if (!finisher_started_) {
        finisher_started_ = true;
        if (absl::Now() + timeout >= deadline_) {
          run_inline = true;
        } else {
          waiter_ = std::thread([this] { Finish(); });
        }
      }
    }
    if (run_inline) Finish();
    absl::MutexLock l(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat(st_->Describe(op_), " is still pending after ",
                       absl::FormatDuration(timeout), " (Wait again)"));
    }
    return status_;
  }

 private:
  void Finish() {
    Millis remaining = ToMillis(deadline_ - absl::Now());
    bool completed = true;
    absl::Status s = CallGloo([&] {
      completed = is_send_ ? buf_->waitSend(remaining) : buf_->waitRecv(remaining);
    });
    if (s.ok() && !completed) s = absl::AbortedError("the transfer was aborted");
    if (!s.ok()) s = st_->Fail(op_, s, peer_);
    absl::MutexLock l(&mu_);
    status_ = s;
    done_ = true;
  }

  std::shared_ptr<GroupState> st_;
  std::string op_;
  Tensor tensor_;  // keeps the memory alive
  std::unique_ptr<gloo::transport::UnboundBuffer> buf_;
  bool is_send_;
  int peer_;
  absl::Time deadline_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finisher_started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread waiter_;
};

// Waits for one posted unbound-buffer transfer until `deadline`; errors name `peer`.
absl::Status WaitTransfer(GroupState& st, absl::string_view op,
                          gloo::transport::UnboundBuffer* buf, bool is_send, int peer,
                          absl::Time deadline) {
  bool completed = true;
  absl::Status s = CallGloo([&] {
    Millis remaining = ToMillis(deadline - absl::Now());
    completed = is_send ? buf->waitSend(remaining) : buf->waitRecv(remaining);
  });
  if (s.ok() && !completed) s = absl::AbortedError("the transfer was aborted");
  if (!s.ok()) return st.Fail(op, s, peer);
  return s;
}

}  // namespace

// ---- The communicator --------------------------------------------------------------------------

struct GlooCommunicator::Impl {
  std::shared_ptr<GroupState> st;
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<KvStore> root_store;
  std::string store_prefix;
  int async_threads = 2;

  // Issue-thread state.
  uint32_t next_tag = 1;  // 0 is the connect barrier
  absl::flat_hash_map<std::string, int> group_counts;

  // Async executor.
  struct Task {
    std::shared_ptr<WorkState> state;
    Op op;
    uint32_t tag;
  };
  absl::Mutex mu;
  std::deque<Task> queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  std::vector<std::thread> threads;

  static absl::StatusOr<std::unique_ptr<Impl>> Connect(
      std::shared_ptr<gloo::transport::Device> device, std::shared_ptr<KvStore> root_store,
      std::string store_prefix, std::string name, int rank, int size, absl::Duration timeout,
      int async_threads);

  absl::Status Execute(const Op& op, uint32_t tag) {
    RETURN_IF_ERROR(st->CheckUsable(op.name));
    return op.run(*st, tag, Millis(st->timeout_ms.load()));
  }

  absl::Status RunInline(absl::StatusOr<Op> op) {
    if (!op.ok()) return op.status();
    return Execute(*op, next_tag++);
  }

  std::unique_ptr<Work> Issue(absl::StatusOr<Op> op) {
    if (!op.ok()) return CompletedWork(op.status());
    auto state = std::make_shared<WorkState>();
    std::string name = st->Describe(op->name);
    {
      absl::MutexLock l(&mu);
      queue.push_back(Task{state, *std::move(op), next_tag++});
    }
    return std::make_unique<AsyncWork>(std::move(state), std::move(name));
  }

  void WorkerLoop() {
    while (true) {
      Task task;
      {
        absl::MutexLock l(&mu);
        mu.Await(absl::Condition(
            +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu) {
              return self->stopping || !self->queue.empty();
            },
            this));
        if (queue.empty()) return;  // stopping
        task = std::move(queue.front());
        queue.pop_front();
      }
      task.state->Complete(Execute(task.op, task.tag));
    }
  }

  void Start() {
    for (int i = 0; i < async_threads; ++i) threads.emplace_back([this] { WorkerLoop(); });
  }

  void Stop() {
    std::deque<Task> cancelled;
    {
      absl::MutexLock l(&mu);
      stopping = true;
      cancelled.swap(queue);
    }
    for (Task& t : cancelled) {
      t.state->Complete(absl::CancelledError(
          absl::StrCat(st->Describe(t.op.name), ": the communicator was destroyed first")));
    }
    for (std::thread& t : threads) t.join();
    threads.clear();
  }
};

absl::StatusOr<std::unique_ptr<GlooCommunicator::Impl>> GlooCommunicator::Impl::Connect(
    std::shared_ptr<gloo::transport::Device> device, std::shared_ptr<KvStore> root_store,
    std::string store_prefix, std::string name, int rank, int size, absl::Duration timeout,
    int async_threads) {
  auto impl = std::make_unique<Impl>();
  auto st = std::make_shared<GroupState>();
  st->name = std::move(name);
  st->rank = rank;
  st->size = size;
  st->timeout_ms = absl::ToInt64Milliseconds(timeout);
  st->store = std::make_shared<PrefixKvStore>(root_store, store_prefix);
  st->context = std::make_shared<gloo::rendezvous::Context>(rank, size);
  st->context->setTimeout(ToMillis(timeout));

  GlooStoreAdapter adapter(st->store.get(), timeout);
  absl::Status s = CallGloo([&] { st->context->connectFullMesh(adapter, device); });
  if (!s.ok() && !adapter.first_error().ok()) s = adapter.first_error();
  // A rank returns from connectFullMesh once its own connections are up, possibly before its
  // peers finished theirs; one barrier (tag 0, before any user op) keeps a fast rank from
  // closing a connection a slower one is still completing.
  if (s.ok()) {
    s = CallGloo([&] {
      gloo::BarrierOptions opts(st->context);
      opts.setTag(0);
      opts.setTimeout(ToMillis(timeout));
      gloo::barrier(opts);
    });
  }
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot connect group '", st->name, "' (rank ",
                                               rank, " of ", size, ", timeout ",
                                               absl::FormatDuration(timeout),
                                               "; a missing key '<name>/<r>' is a rank r that "
                                               "never joined): ",
                                               s.message()));
  }
  // Publish the listening address of each of our connections: when a connection fails, Gloo's
  // message carries the remote address, which for the side that dialled is the peer's listening
  // address, mapped back to its rank here. (The side that accepted sees the peer's ephemeral
  // port, which nobody can publish; its message keeps Gloo's "[ip]:port".)
  std::vector<std::string> addrs;
  for (int i = 0; i < size; ++i) {
    if (i == rank) continue;
    (void)CallGloo([&] { addrs.push_back(st->context->getPair(i)->address().str()); });
  }
  RETURN_IF_ERROR(Annotate(st->store->Set(absl::StrCat("sockaddrs/", rank),
                                          absl::StrJoin(addrs, "\n")),
                           "publishing connection addresses"));

  impl->st = std::move(st);
  impl->device = std::move(device);
  impl->root_store = std::move(root_store);
  impl->store_prefix = std::move(store_prefix);
  impl->async_threads = async_threads;
  impl->Start();
  return impl;
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooCommOptions& options) {
  if (options.store == nullptr) {
    return absl::InvalidArgumentError("GlooCommOptions.store is required (the rendezvous store)");
  }
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat("GlooCommOptions: rank ", options.rank,
                                                   " is outside a world of size ", options.size));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("GlooCommOptions.timeout must be positive");
  }
  if (options.async_threads < 1) {
    return absl::InvalidArgumentError("GlooCommOptions.async_threads must be >= 1");
  }
  if (options.name.empty()) return absl::InvalidArgumentError("GlooCommOptions.name is empty");
  IgnoreSigpipeIfDefault();

  gloo::transport::tcp::attr attr;
  if (!options.iface.empty()) {
    attr.iface = options.iface;
  } else {
    attr.hostname = options.hostname;
  }
  std::shared_ptr<gloo::transport::Device> device;
  absl::Status s = CallGloo([&] { device = gloo::transport::tcp::CreateDevice(attr); });
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "cannot open a Gloo TCP device on ",
        options.iface.empty() ? absl::StrCat("host '", options.hostname, "'")
                              : absl::StrCat("interface '", options.iface, "'"),
        " (check GlooCommOptions.hostname / iface): ", s.message()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl,
                   Impl::Connect(std::move(device), options.store, options.name, options.name,
                                 options.rank, options.size, options.timeout,
                                 options.async_threads));
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(std::move(impl)));
}

GlooCommunicator::GlooCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GlooCommunicator::~GlooCommunicator() { impl_->Stop(); }

int GlooCommunicator::rank() const { return impl_->st->rank; }
int GlooCommunicator::size() const { return impl_->st->size; }
const std::string& GlooCommunicator::name() const { return impl_->st->name; }
absl::Duration GlooCommunicator::timeout() const { return impl_->st->timeout(); }
void GlooCommunicator::SetTimeout(absl::Duration timeout) {
  impl_->st->timeout_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout));
}
absl::Status GlooCommunicator::health() const { return impl_->st->Health(); }

// ---- Op builders ---------------------------------------------------------------------------------

namespace {

absl::StatusOr<Op> MakeAllReduce(const Tensor& inout, ReduceOp op) {
  std::string name = absl::StrCat("AllReduce(", inout.DebugString(), ", ", ReduceOpName(op), ")");
  RETURN_IF_ERROR(CheckTensor(inout, name, "inout"));
  ASSIGN_OR_RETURN(ReduceFn fn, MakeReduceFn(inout.dtype(), op, name));
  return Op{name, [inout, fn, name](GroupState& st, uint32_t tag, Millis timeout) {
              const size_t n = static_cast<size_t>(inout.numel());
              if (st.size == 1 || n == 0) return absl::OkStatus();
              gloo::AllreduceOptions opts(st.context);
              void* p = inout.raw_data();
              switch (inout.element_size()) {
                case 1:
                  opts.setOutput(static_cast<uint8_t*>(p), n);
                  break;
                case 2:
                  opts.setOutput(static_cast<uint16_t*>(p), n);
                  break;
                case 4:
                  opts.setOutput(static_cast<uint32_t*>(p), n);
                  break;
                default:
                  opts.setOutput(static_cast<uint64_t*>(p), n);
                  break;
              }
              opts.setReduceFunction(fn);
              opts.setTag(tag);
              opts.setTimeout(timeout);
              return st.Fail(name, CallGloo([&] { gloo::allreduce(opts); }), -1);
            }};
}

absl::StatusOr<Op> MakeAllGatherV(const Tensor& in, const Tensor& out,
                                  std::vector<int64_t> splits, int rank, int size,
                                  absl::string_view opname) {
  std::string name = absl::StrCat(opname, "(", in.DebugString(), " -> ", out.DebugString(), ")");
  RETURN_IF_ERROR(CheckTensor(in, name, "in"));
  RETURN_IF_ERROR(CheckTensor(out, name, "out"));
  if (in.dtype() != out.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": in and out dtypes differ"));
  }
  if (static_cast<int>(splits.size()) != size) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": out_splits has ", splits.size(),
                                                   " entries for a group of ", size));
  }
  if (in.ndim() < 1 || out.ndim() < 1 || RowElements(in) != RowElements(out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": in and out must be [rows, ...] with the same row shape"));
  }
  int64_t total = 0;
  for (int64_t s : splits) {
    if (s < 0) return absl::InvalidArgumentError(absl::StrCat(name, ": negative split"));
    total += s;
  }
  if (in.dim(0) != splits[rank] || out.dim(0) != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": in has ", in.dim(0), " rows (rank ", rank, "'s split is ", splits[rank],
        ") and out has ", out.dim(0), " rows (splits sum to ", total, ")"));
  }
  const int64_t row_bytes = RowElements(in) * static_cast<int64_t>(in.element_size());
  return Op{name, [in, out, splits, row_bytes, name](GroupState& st, uint32_t tag,
                                                     Millis timeout) {
              if (st.size == 1) {
                if (in.nbytes() > 0) std::memcpy(out.raw_data(), in.raw_data(), in.nbytes());
                return absl::OkStatus();
              }
              if (out.nbytes() == 0) return absl::OkStatus();
              std::vector<size_t> bytes(splits.size());
              for (size_t r = 0; r < splits.size(); ++r) bytes[r] = splits[r] * row_bytes;
              gloo::AllgathervOptions opts(st.context);
              opts.setInput(reinterpret_cast<uint8_t*>(BytesOf(in)), in.nbytes());
              opts.setOutput(reinterpret_cast<uint8_t*>(BytesOf(out)), bytes);
              opts.setTag(tag);
              opts.setTimeout(timeout);
              return st.Fail(name, CallGloo([&] { gloo::allgatherv(opts); }), -1);
            }};
}

absl::StatusOr<Op> MakeReduceScatter(const Tensor& in, const Tensor& out, ReduceOp op, int size) {
  std::string name = absl::StrCat("ReduceScatter(", in.DebugString(), " -> ", out.DebugString(),
                                  ", ", ReduceOpName(op), ")");
  RETURN_IF_ERROR(CheckTensor(in, name, "in"));
  RETURN_IF_ERROR(CheckTensor(out, name, "out"));
  if (in.dtype() != out.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": in and out dtypes differ"));
  }
  if (in.numel() != out.numel() * size) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": in must hold group size (", size, ") x out's ", out.numel(), " elements"));
  }
  ASSIGN_OR_RETURN(ReduceFn fn, MakeReduceFn(in.dtype(), op, name));
  return Op{name, [in, out, fn, name](GroupState& st, uint32_t tag, Millis timeout) {
              const int n = st.size;
              const int r = st.rank;
              const size_t chunk = out.nbytes();
              const size_t elems = static_cast<size_t>(out.numel());
              if (chunk == 0) return absl::OkStatus();
              if (n == 1) {
                std::memcpy(out.raw_data(), in.raw_data(), chunk);
                return absl::OkStatus();
              }
              // Ring: at step s rank r sends its partial sum of block (r - s - 1) to the right
              // and adds the left neighbour's partial sum of block (r - s - 2); after n - 1
              // steps block r is complete.
              std::vector<char> work(static_cast<const char*>(in.raw_data()),
                                     static_cast<const char*>(in.raw_data()) + chunk * n);
              std::vector<char> incoming(chunk);
              const int right = (r + 1) % n;
              const int left = (r + n - 1) % n;
              const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout.count());
              const uint64_t slot = gloo::Slot::build(kReduceScatterSlotPrefix, tag);
              std::unique_ptr<gloo::transport::UnboundBuffer> send_buf, recv_buf;
              RETURN_IF_ERROR(st.Fail(name, CallGloo([&] {
                                        send_buf = st.context->createUnboundBuffer(
                                            work.data(), work.size());
                                        recv_buf = st.context->createUnboundBuffer(
                                            incoming.data(), incoming.size());
                                      }),
                                      -1));
              for (int s = 0; s < n - 1; ++s) {
                const int send_block = (r - s - 1 + 2 * n) % n;
                const int recv_block = (r - s - 2 + 2 * n) % n;
                RETURN_IF_ERROR(st.Fail(name, CallGloo([&] {
                                          recv_buf->recv(left, slot, 0, chunk);
                                          send_buf->send(right, slot, send_block * chunk, chunk);
                                        }),
                                        -1));
                RETURN_IF_ERROR(
                    WaitTransfer(st, name, recv_buf.get(), /*is_send=*/false, left, deadline));
                char* acc = work.data() + recv_block * chunk;
                fn(acc, acc, incoming.data(), elems);
                RETURN_IF_ERROR(
                    WaitTransfer(st, name, send_buf.get(), /*is_send=*/true, right, deadline));
              }
              std::memcpy(out.raw_data(), work.data() + r * chunk, chunk);
              return absl::OkStatus();
            }};
}

absl::StatusOr<Op> MakeAllToAllV(const Tensor& in, absl::Span<const int64_t> in_splits_span,
                                 const Tensor& out, absl::Span<const int64_t> out_splits_span,
                                 int rank, int size) {
  std::string name =
      absl::StrCat("AllToAllV(", in.DebugString(), " -> ", out.DebugString(), ")");
  RETURN_IF_ERROR(CheckTensor(in, name, "in"));
  RETURN_IF_ERROR(CheckTensor(out, name, "out"));
  std::vector<int64_t> in_splits(in_splits_span.begin(), in_splits_span.end());
  std::vector<int64_t> out_splits(out_splits_span.begin(), out_splits_span.end());
  if (in.dtype() != out.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": in and out dtypes differ"));
  }
  if (in.ndim() < 1 || out.ndim() < 1 || RowElements(in) != RowElements(out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": in and out must be [rows, cols...] with the same row shape"));
  }
  if (static_cast<int>(in_splits.size()) != size || static_cast<int>(out_splits.size()) != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": in_splits and out_splits need one entry per rank (", size,
                     "), got ", in_splits.size(), " and ", out_splits.size()));
  }
  int64_t in_total = 0, out_total = 0;
  for (int i = 0; i < size; ++i) {
    if (in_splits[i] < 0 || out_splits[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": negative split"));
    }
    in_total += in_splits[i];
    out_total += out_splits[i];
  }
  if (in_total != in.dim(0) || out_total != out.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": in_splits sum to ", in_total, " rows for in's ", in.dim(0),
        ", out_splits sum to ", out_total, " rows for out's ", out.dim(0)));
  }
  if (in_splits[rank] != out_splits[rank]) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": this rank sends itself ",
                                                   in_splits[rank], " rows but expects ",
                                                   out_splits[rank]));
  }
  const size_t row_bytes = static_cast<size_t>(RowElements(in)) * in.element_size();
  return Op{name, [in, out, in_splits, out_splits, row_bytes, name](GroupState& st, uint32_t tag,
                                                                     Millis timeout) {
              const int n = st.size;
              const int r = st.rank;
              std::vector<size_t> in_off(n + 1, 0), out_off(n + 1, 0);
              for (int i = 0; i < n; ++i) {
                in_off[i + 1] = in_off[i] + in_splits[i] * row_bytes;
                out_off[i + 1] = out_off[i] + out_splits[i] * row_bytes;
              }
              char* src = BytesOf(in);
              char* dst = BytesOf(out);
              const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout.count());
              const uint64_t slot = gloo::Slot::build(kAllToAllVSlotPrefix, tag);
              std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> recvs(n), sends(n);
              // Post every receive, then every send (peers in a staggered order so the ranks
              // do not all send to rank 0 first).
              RETURN_IF_ERROR(st.Fail(
                  name, CallGloo([&] {
                    for (int k = 1; k < n; ++k) {
                      const int p = (r + n - k) % n;
                      const size_t len = out_off[p + 1] - out_off[p];
                      if (len == 0) continue;
                      recvs[p] = st.context->createUnboundBuffer(dst + out_off[p], len);
                      recvs[p]->recv(p, slot);
                    }
                    for (int k = 1; k < n; ++k) {
                      const int p = (r + k) % n;
                      const size_t len = in_off[p + 1] - in_off[p];
                      if (len == 0) continue;
                      sends[p] = st.context->createUnboundBuffer(src + in_off[p], len);
                      sends[p]->send(p, slot);
                    }
                  }),
                  -1));
              const size_t self = in_off[r + 1] - in_off[r];
              if (self > 0) std::memcpy(dst + out_off[r], src + in_off[r], self);
              for (int k = 1; k < n; ++k) {
                const int p = (r + n - k) % n;
                if (recvs[p] == nullptr) continue;
                RETURN_IF_ERROR(WaitTransfer(st, name, recvs[p].get(), false, p, deadline));
              }
              for (int k = 1; k < n; ++k) {
                const int p = (r + k) % n;
                if (sends[p] == nullptr) continue;
                RETURN_IF_ERROR(WaitTransfer(st, name, sends[p].get(), true, p, deadline));
              }
              return absl::OkStatus();
            }};
}

absl::StatusOr<Op> MakeBroadcast(const Tensor& tensor, int root, int size) {
  std::string name = absl::StrCat("Broadcast(", tensor.DebugString(), ", root ", root, ")");
  RETURN_IF_ERROR(CheckTensor(tensor, name, "tensor"));
  if (root < 0 || root >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": root is outside the group of ", size));
  }
  return Op{name, [tensor, root, name](GroupState& st, uint32_t tag, Millis timeout) {
              if (st.size == 1 || tensor.nbytes() == 0) return absl::OkStatus();
              gloo::BroadcastOptions opts(st.context);
              opts.setOutput(static_cast<uint8_t*>(tensor.raw_data()), tensor.nbytes());
              opts.setRoot(root);
              opts.setTag(tag);
              opts.setTimeout(timeout);
              return st.Fail(name, CallGloo([&] { gloo::broadcast(opts); }), -1);
            }};
}

Op MakeBarrier() {
  return Op{"Barrier", [](GroupState& st, uint32_t tag, Millis timeout) {
              if (st.size == 1) return absl::OkStatus();
              gloo::BarrierOptions opts(st.context);
              opts.setTag(tag);
              opts.setTimeout(timeout);
              return st.Fail("Barrier", CallGloo([&] { gloo::barrier(opts); }), -1);
            }};
}

}  // namespace

absl::Status GlooCommunicator::AllReduce(const Tensor& inout, ReduceOp op) {
  CommTimer timer(CommOp::kAllReduce, inout.defined() ? inout.nbytes() : 0);
  return impl_->RunInline(MakeAllReduce(inout, op));
}
std::unique_ptr<Work> GlooCommunicator::AllReduceAsync(const Tensor& inout, ReduceOp op) {
  return impl_->Issue(MakeAllReduce(inout, op));
}

absl::Status GlooCommunicator::AllGather(const Tensor& in, const Tensor& out) {
  CommTimer timer(CommOp::kAllGather, out.defined() ? out.nbytes() : 0);
  std::vector<int64_t> splits(size(), in.defined() && in.ndim() > 0 ? in.dim(0) : 0);
  return impl_->RunInline(MakeAllGatherV(in, out, splits, rank(), size(), "AllGather"));
}
std::unique_ptr<Work> GlooCommunicator::AllGatherAsync(const Tensor& in, const Tensor& out) {
  std::vector<int64_t> splits(size(), in.defined() && in.ndim() > 0 ? in.dim(0) : 0);
  return impl_->Issue(MakeAllGatherV(in, out, splits, rank(), size(), "AllGather"));
}

absl::Status GlooCommunicator::AllGatherV(const Tensor& in, const Tensor& out,
                                          absl::Span<const int64_t> out_splits) {
  CommTimer timer(CommOp::kAllGatherV, out.defined() ? out.nbytes() : 0);
  return impl_->RunInline(MakeAllGatherV(
      in, out, std::vector<int64_t>(out_splits.begin(), out_splits.end()), rank(), size(),
      "AllGatherV"));
}
std::unique_ptr<Work> GlooCommunicator::AllGatherVAsync(const Tensor& in, const Tensor& out,
                                                        absl::Span<const int64_t> out_splits) {
  return impl_->Issue(MakeAllGatherV(in, out,
                                     std::vector<int64_t>(out_splits.begin(), out_splits.end()),
                                     rank(), size(), "AllGatherV"));
}

absl::Status GlooCommunicator::ReduceScatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  CommTimer timer(CommOp::kReduceScatter, in.defined() ? in.nbytes() : 0);
  return impl_->RunInline(MakeReduceScatter(in, out, op, size()));
}
std::unique_ptr<Work> GlooCommunicator::ReduceScatterAsync(const Tensor& in, const Tensor& out,
                                                           ReduceOp op) {
  return impl_->Issue(MakeReduceScatter(in, out, op, size()));
}

absl::Status GlooCommunicator::AllToAllV(const Tensor& in, absl::Span<const int64_t> in_splits,
                                         const Tensor& out,
                                         absl::Span<const int64_t> out_splits) {
  CommTimer timer(CommOp::kAllToAllV, (in.defined() ? in.nbytes() : 0) +
                                          (out.defined() ? out.nbytes() : 0));
  return impl_->RunInline(MakeAllToAllV(in, in_splits, out, out_splits, rank(), size()));
}
std::unique_ptr<Work> GlooCommunicator::AllToAllVAsync(const Tensor& in,
                                                       absl::Span<const int64_t> in_splits,
                                                       const Tensor& out,
                                                       absl::Span<const int64_t> out_splits) {
  return impl_->Issue(MakeAllToAllV(in, in_splits, out, out_splits, rank(), size()));
}

absl::Status GlooCommunicator::Broadcast(const Tensor& tensor, int root) {
  CommTimer timer(CommOp::kBroadcast, tensor.defined() ? tensor.nbytes() : 0);
  return impl_->RunInline(MakeBroadcast(tensor, root, size()));
}
std::unique_ptr<Work> GlooCommunicator::BroadcastAsync(const Tensor& tensor, int root) {
  return impl_->Issue(MakeBroadcast(tensor, root, size()));
}

absl::Status GlooCommunicator::Barrier() {
  CommTimer timer(CommOp::kBarrier, 0);
  return impl_->RunInline(MakeBarrier());
}
std::unique_ptr<Work> GlooCommunicator::BarrierAsync() { return impl_->Issue(MakeBarrier()); }

namespace {

std::unique_ptr<Work> PostP2p(const std::shared_ptr<GroupState>& st, const Tensor& tensor,
                              int peer, uint32_t tag, bool is_send) {
  std::string name = absl::StrCat(is_send ? "Send(" : "Recv(", tensor.DebugString(),
                                  is_send ? ", dst " : ", src ", peer, ", tag ", tag, ")");
  absl::Status s = CheckTensor(tensor, name, "tensor");
  if (s.ok() && (peer < 0 || peer >= st->size || peer == st->rank)) {
    s = absl::InvalidArgumentError(absl::StrCat(st->Describe(name), ": the peer must be another "
                                                                    "rank of the group"));
  }
  if (s.ok()) s = st->CheckUsable(name);
  if (!s.ok()) return CompletedWork(s);
  const absl::Time deadline = absl::Now() + st->timeout();
  std::unique_ptr<gloo::transport::UnboundBuffer> buf;
  s = CallGloo([&] {
    buf = st->context->createUnboundBuffer(BytesOf(tensor), tensor.nbytes());
    const uint64_t slot = gloo::Slot::build(kP2pSlotPrefix, tag);
    if (is_send) {
      buf->send(peer, slot);
    } else {
      buf->recv(peer, slot);
    }
  });
  if (!s.ok()) return CompletedWork(st->Fail(name, s, peer));
  return std::make_unique<P2pWork>(st, std::move(name), tensor, std::move(buf), is_send, peer,
                                   deadline);
}

}  // namespace

std::unique_ptr<Work> GlooCommunicator::SendAsync(const Tensor& tensor, int dst, uint32_t tag) {
  return PostP2p(impl_->st, tensor, dst, tag, /*is_send=*/true);
}
std::unique_ptr<Work> GlooCommunicator::RecvAsync(const Tensor& tensor, int src, uint32_t tag) {
  return PostP2p(impl_->st, tensor, src, tag, /*is_send=*/false);
}

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicator::NewGroup(
    absl::Span<const int> ranks, absl::string_view name) {
  const std::string ranks_text = absl::StrJoin(ranks, ",");
  const std::string what = absl::StrCat("NewGroup([", ranks_text, "]) on group '",
                                        impl_->st->name, "'");
  if (ranks.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no ranks"));
  int new_rank = -1;
  std::vector<bool> seen(size(), false);
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int r = ranks[i];
    if (r < 0 || r >= size() || seen[r]) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": rank ", r, " is out of range or repeated"));
    }
    seen[r] = true;
    if (r == rank()) new_rank = static_cast<int>(i);
  }
  if (new_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", rank(), " is not a member (only members call NewGroup)"));
  }
  // Members create the same lists in the same order, so (list, count) names the group in the
  // store without any exchange.
  const int seq = impl_->group_counts[ranks_text]++;
  const std::string prefix =
      absl::StrCat(impl_->store_prefix, "/g", ranks.size(), "_",
                   absl::Hex(Fnv1a(ranks_text), absl::kZeroPad16), "_", seq);
  std::string group_name =
      name.empty() ? absl::StrCat(impl_->st->name, "/[", ranks_text, "]") : std::string(name);
  ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl,
                   Impl::Connect(impl_->device, impl_->root_store, prefix, std::move(group_name),
                                 new_rank, static_cast<int>(ranks.size()), timeout(),
                                 impl_->async_threads));
  return std::unique_ptr<Communicator>(new GlooCommunicator(std::move(impl)));
}

}  // namespace tessera
