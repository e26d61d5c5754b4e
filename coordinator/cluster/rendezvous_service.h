// RendezvousService: the coordinator's in-memory key-value store (proto/tessera/v1/cluster.proto,
// service Rendezvous) that workers' collective libraries bootstrap from (Gloo's
// rendezvous::Store, NCCL unique ids; DESIGN.md section 4).
//
// Contract: keys live in scopes (a model instance's "<instance_id>/<generation>"); a scope never
// sees another's keys. Get/Wait block until the keys exist, the request's timeout_ms passes
// (DEADLINE_EXCEEDED naming the scope and the missing keys), the client cancels, or the service
// shuts down (UNAVAILABLE). Add keeps a counter as decimal ASCII text and fails with
// FAILED_PRECONDITION when the key holds something else. Timeouts are capped at 10 minutes.
//
// Thread safety: every method may be called concurrently (one mutex, one condition variable).
// Blocking calls hold a gRPC sync-server thread while they wait.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "tessera/v1/cluster.grpc.pb.h"

namespace tessera {

class RendezvousService final : public v1::Rendezvous::Service {
 public:
  RendezvousService() = default;
  ~RendezvousService() override;

  grpc::Status Set(grpc::ServerContext* context, const v1::RendezvousSetRequest* request,
                   v1::RendezvousSetResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::RendezvousGetRequest* request,
                   v1::RendezvousGetResponse* response) override;
  grpc::Status Add(grpc::ServerContext* context, const v1::RendezvousAddRequest* request,
                   v1::RendezvousAddResponse* response) override;
  grpc::Status Check(grpc::ServerContext* context, const v1::RendezvousKeysRequest* request,
                     v1::RendezvousCheckResponse* response) override;
  grpc::Status Wait(grpc::ServerContext* context, const v1::RendezvousKeysRequest* request,
                    v1::RendezvousWaitResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::RendezvousDeleteRequest* request,
                      v1::RendezvousDeleteResponse* response) override;

  // Deletes every scope that starts with `prefix` (an instance's old generations).
  void DropScopes(const std::string& prefix);
  // Wakes every blocked call; they return UNAVAILABLE. Later calls are refused.
  void Shutdown();

 private:
  // Waits until every key of `keys` exists in `scope`. Called with mu_ held (in `lock`).
  grpc::Status WaitForKeys(grpc::ServerContext* context, std::unique_lock<std::mutex>& lock,
                           const std::string& scope,
                           const google::protobuf::RepeatedPtrField<std::string>& keys,
                           int64_t timeout_ms);

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::map<std::string, std::string>> scopes_;
  bool shutdown_ = false;
};

}  // namespace tessera
