// RendezvousKvStore: the KvStore (parallel/kv_store.h) backed by the coordinator's gRPC
// Rendezvous service (proto/tessera/v1/cluster.proto; coordinator/cluster/rendezvous_service.h).
//
// Workers of a model instance bootstrap Gloo (GlooCommOptions.store) and NCCL unique-id exchange
// through it. Every call is scoped to the Assignment's rendezvous_namespace, so generations of a
// group never see each other's keys. Blocking reads (Get/Wait) pass their timeout to the server
// (which answers DEADLINE_EXCEEDED naming the missing keys) and give the RPC that timeout plus a
// few seconds of slack, so a dead coordinator fails them too. Other calls have `rpc_timeout`.
// Errors keep the RPC's status code and name the service address, the scope and the key.
//
// Thread safety: all methods may be called concurrently (one gRPC channel, shared).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/gloo_communicator.h"
#include "parallel/kv_store.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace tessera {

namespace v1 {
class Assignment;
}  // namespace v1

class RendezvousKvStore : public KvStore {
 public:
  // `address`: host:port of the Rendezvous service (insecure channel, like the cluster stream).
  static std::unique_ptr<RendezvousKvStore> Connect(const std::string& address,
                                                    const std::string& scope,
                                                    absl::Duration rpc_timeout = absl::Seconds(10));
  // Over an existing channel (the worker's channel to the coordinator); `address` is for errors.
  RendezvousKvStore(std::shared_ptr<grpc::Channel> channel, std::string address, std::string scope,
                    absl::Duration rpc_timeout = absl::Seconds(10));
  ~RendezvousKvStore() override;

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  const std::string& scope() const { return scope_; }

 private:
  struct Stub;
  std::unique_ptr<Stub> stub_;
  std::string address_;
  std::string scope_;
  absl::Duration rpc_timeout_;
};

// The Gloo world group of a model instance, bootstrapped from a worker's Assignment: the store is
// the Rendezvous service at a.rendezvous_address() (or `coordinator_channel` when that is empty)
// scoped to a.rendezvous_namespace(); rank and size come from the Assignment. `hostname` is the
// address this worker listens on for its peers: "" = this machine's host name (gethostname),
// which resolves to the pod / host IP in Kubernetes and most clusters; use "127.0.0.1" when every
// rank runs on one machine. Blocks until every rank of the instance joined (at most `timeout`).
absl::StatusOr<std::unique_ptr<GlooCommunicator>> ConnectInstanceGroup(
    const v1::Assignment& a, std::shared_ptr<grpc::Channel> coordinator_channel,
    const std::string& hostname = "", absl::Duration timeout = kDefaultCommTimeout);

}  // namespace tessera
