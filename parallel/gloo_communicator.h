// GlooCommunicator: the Communicator (parallel/communicator.h) for host tensors, over Gloo's TCP
// transport (loopback for single-machine runs and tests, or the interface of a given address).
//
// Bootstrap: every rank calls Create with the same store (a KvStore: a directory for local runs,
// the coordinator's Rendezvous service in a cluster), the same group name, its rank and the world
// size. Gloo's full-mesh rendezvous runs over the store under "<name>/"; the call returns once
// every rank connected, or fails after the timeout naming the ranks that never showed up. Reuse
// a name in one store only for one generation of a group (the cluster scopes each generation's
// store namespace; tests use a fresh directory).
//
// Algorithms: all-reduce, all-gather(v), broadcast and barrier are Gloo's; reduce-scatter (ring)
// and all-to-all-v (pairwise, every peer at once) are implemented here on Gloo's unbound buffers
// so every wait knows its peer; send/recv are unbound-buffer sends with slot = (p2p, tag).
// Blocking calls run on the calling thread; async calls run on `async_threads` worker threads per
// communicator (ops start in issue order and may overlap, each under its own Gloo tag).
// Send/Recv are posted on the calling thread and complete in Work::Wait.
//
// Failure: each op is bounded by the timeout; the first transport error (a dead peer, a timeout)
// breaks the communicator and closes its connections, so the other ranks of the group fail fast
// too (NCCL-abort semantics) instead of waiting out their own timeouts. Gloo signals errors with
// exceptions; they are caught here and become absl::Status (DEADLINE_EXCEEDED for timeouts,
// UNAVAILABLE for lost connections). The KvStore adapter handed to Gloo throws gloo::IoException
// (the only way to report a store failure to Gloo's rendezvous) and the exception is caught
// around the rendezvous call. Create ignores SIGPIPE process-wide when it is at its default
// (writes to a dead peer's socket must become errors, not kill the process).
//
// Thread safety: see communicator.h (issue from one thread; Wait from any).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/kv_store.h"

namespace tessera {

struct GlooCommOptions {
  std::shared_ptr<KvStore> store;  // required: the rendezvous store shared by every rank
  int rank = 0;
  int size = 1;
  std::string name = "world";  // group name: store namespace and error messages
  // The address this rank listens on and advertises: an IP or a host name resolving to one of
  // this machine's interfaces. Ignored when `iface` is set.
  std::string hostname = "127.0.0.1";
  std::string iface;  // a network interface name ("eth0") instead of `hostname`
  absl::Duration timeout = kDefaultCommTimeout;  // rendezvous and every op
  int async_threads = 2;
};

class GlooCommunicator : public Communicator {
 public:
  // Connects to every other rank (blocks until all ranks joined, at most options.timeout).
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(const GlooCommOptions& options);
  // Cancels async ops that have not started (CANCELLED), waits for running ones, closes the
  // connections.
  ~GlooCommunicator() override;
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  absl::string_view backend() const override { return "gloo"; }
  absl::Duration timeout() const override;
  void SetTimeout(absl::Duration timeout) override;
  absl::Status health() const override;

  absl::Status AllReduce(const Tensor& inout, ReduceOp op) override;
  absl::Status AllGather(const Tensor& in, const Tensor& out) override;
  absl::Status AllGatherV(const Tensor& in, const Tensor& out,
                          absl::Span<const int64_t> out_splits) override;
  absl::Status ReduceScatter(const Tensor& in, const Tensor& out, ReduceOp op) override;
  absl::Status AllToAllV(const Tensor& in, absl::Span<const int64_t> in_splits, const Tensor& out,
                         absl::Span<const int64_t> out_splits) override;
  absl::Status Broadcast(const Tensor& tensor, int root) override;
  absl::Status Barrier() override;

  std::unique_ptr<Work> AllReduceAsync(const Tensor& inout, ReduceOp op) override;
  std::unique_ptr<Work> AllGatherAsync(const Tensor& in, const Tensor& out) override;
  std::unique_ptr<Work> AllGatherVAsync(const Tensor& in, const Tensor& out,
                                        absl::Span<const int64_t> out_splits) override;
  std::unique_ptr<Work> ReduceScatterAsync(const Tensor& in, const Tensor& out,
                                           ReduceOp op) override;
  std::unique_ptr<Work> AllToAllVAsync(const Tensor& in, absl::Span<const int64_t> in_splits,
                                       const Tensor& out,
                                       absl::Span<const int64_t> out_splits) override;
  std::unique_ptr<Work> BroadcastAsync(const Tensor& tensor, int root) override;
  std::unique_ptr<Work> BarrierAsync() override;
  std::unique_ptr<Work> SendAsync(const Tensor& tensor, int dst, uint32_t tag) override;
  std::unique_ptr<Work> RecvAsync(const Tensor& tensor, int src, uint32_t tag) override;

  absl::StatusOr<std::unique_ptr<Communicator>> NewGroup(absl::Span<const int> ranks,
                                                         absl::string_view name) override;

  struct Impl;  // public so the implementation's helpers can name it; opaque to users

 private:
  explicit GlooCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
