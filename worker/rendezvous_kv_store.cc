#include "worker/rendezvous_kv_store.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tessera/v1/cluster.grpc.pb.h"

namespace tessera {
namespace {

// Slack on top of a blocking call's server-side timeout before the RPC itself gives up.
constexpr absl::Duration kBlockingSlack = absl::Seconds(5);

void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
}

int64_t TimeoutMs(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return int64_t{10} * 60 * 1000;  // the server's cap
  return std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout));
}

}  // namespace

struct RendezvousKvStore::Stub {
  std::unique_ptr<v1::Rendezvous::Stub> stub;
};

std::unique_ptr<RendezvousKvStore> RendezvousKvStore::Connect(const std::string& address,
                                                              const std::string& scope,
                                                              absl::Duration rpc_timeout) {
  return std::make_unique<RendezvousKvStore>(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), address, scope,
      rpc_timeout);
}

RendezvousKvStore::RendezvousKvStore(std::shared_ptr<grpc::Channel> channel, std::string address,
                                     std::string scope, absl::Duration rpc_timeout)
    : stub_(std::make_unique<Stub>(Stub{v1::Rendezvous::NewStub(std::move(channel))})),
      address_(std::move(address)),
      scope_(std::move(scope)),
      rpc_timeout_(rpc_timeout) {}

RendezvousKvStore::~RendezvousKvStore() = default;

namespace {

absl::Status FromGrpc(const grpc::Status& status, absl::string_view what,
                      const std::string& address, const std::string& scope) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("rendezvous ", address, " scope '", scope, "' ", what, ": ",
                                   status.error_message()));
}

}  // namespace

absl::Status RendezvousKvStore::Set(absl::string_view key, absl::string_view value) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, rpc_timeout_);
  v1::RendezvousSetRequest req;
  req.set_scope(scope_);
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  v1::RendezvousSetResponse resp;
  return FromGrpc(stub_->stub->Set(&ctx, req, &resp), absl::StrCat("Set '", key, "'"), address_,
                  scope_);
}

absl::StatusOr<std::string> RendezvousKvStore::Get(absl::string_view key,
                                                   absl::Duration timeout) {
  grpc::ClientContext ctx;
  const int64_t ms = TimeoutMs(timeout);
  SetDeadline(ctx, absl::Milliseconds(ms) + kBlockingSlack);
  v1::RendezvousGetRequest req;
  req.set_scope(scope_);
  req.set_key(std::string(key));
  req.set_timeout_ms(ms);
  v1::RendezvousGetResponse resp;
  absl::Status s = FromGrpc(stub_->stub->Get(&ctx, req, &resp), absl::StrCat("Get '", key, "'"),
                            address_, scope_);
  if (!s.ok()) return s;
  return std::move(*resp.mutable_value());
}

absl::Status RendezvousKvStore::Wait(absl::Span<const std::string> keys,
                                     absl::Duration timeout) {
  grpc::ClientContext ctx;
  const int64_t ms = TimeoutMs(timeout);
  SetDeadline(ctx, absl::Milliseconds(ms) + kBlockingSlack);
  v1::RendezvousKeysRequest req;
  req.set_scope(scope_);
  for (const std::string& k : keys) req.add_keys(k);
  req.set_timeout_ms(ms);
  v1::RendezvousWaitResponse resp;
  return FromGrpc(stub_->stub->Wait(&ctx, req, &resp),
                  absl::StrCat("Wait [", absl::StrJoin(keys, ", "), "]"), address_, scope_);
}

absl::StatusOr<int64_t> RendezvousKvStore::Add(absl::string_view key, int64_t delta) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, rpc_timeout_);
  v1::RendezvousAddRequest req;
  req.set_scope(scope_);
  req.set_key(std::string(key));
  req.set_delta(delta);
  v1::RendezvousAddResponse resp;
  absl::Status s = FromGrpc(stub_->stub->Add(&ctx, req, &resp), absl::StrCat("Add '", key, "'"),
                            address_, scope_);
  if (!s.ok()) return s;
  return resp.value();
}

absl::StatusOr<bool> RendezvousKvStore::Check(absl::Span<const std::string> keys) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, rpc_timeout_);
  v1::RendezvousKeysRequest req;
  req.set_scope(scope_);
  for (const std::string& k : keys) req.add_keys(k);
  v1::RendezvousCheckResponse resp;
  absl::Status s = FromGrpc(stub_->stub->Check(&ctx, req, &resp), "Check", address_, scope_);
  if (!s.ok()) return s;
  return resp.ready();
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> ConnectInstanceGroup(
    const v1::Assignment& a, std::shared_ptr<grpc::Channel> coordinator_channel,
    const std::string& hostname, absl::Duration timeout) {
  const std::string what = absl::StrCat("instance '", a.instance_id(), "' generation ",
                                        a.generation(), " rank ", a.rank());
  if (a.rendezvous_namespace().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the Assignment has no rendezvous_namespace"));
  }
  GlooCommOptions options;
  if (a.rendezvous_address().empty()) {
    if (coordinator_channel == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": no rendezvous_address in the Assignment and no coordinator channel"));
    }
    options.store = std::make_shared<RendezvousKvStore>(
        std::move(coordinator_channel), "the coordinator", a.rendezvous_namespace());
  } else {
    options.store = RendezvousKvStore::Connect(a.rendezvous_address(), a.rendezvous_namespace());
  }
  options.rank = a.rank();
  options.size = a.world_size();
  options.name = "world";  // the scope already names instance and generation
  options.timeout = timeout;
  options.hostname = hostname;
  if (options.hostname.empty()) {
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0) {
      return absl::UnavailableError(absl::StrCat(what, ": gethostname failed; pass a hostname"));
    }
    options.hostname = host;
  }
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm = GlooCommunicator::Create(options);
  if (!comm.ok()) {
    return absl::Status(comm.status().code(),
                        absl::StrCat(what, " (listening on ", options.hostname,
                                     "): ", comm.status().message()));
  }
  return comm;
}

}  // namespace tessera
