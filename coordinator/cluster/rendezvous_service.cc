#include "coordinator/cluster/rendezvous_service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"

namespace tessera {
namespace {

constexpr int64_t kMaxTimeoutMs = 10 * 60 * 1000;

grpc::Status CheckScopeAndKey(const std::string& scope, const std::string& key) {
  if (scope.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous: scope is empty (use the Assignment's rendezvous_namespace)");
  }
  if (key.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rendezvous: key is empty");
  return grpc::Status::OK;
}

}  // namespace

RendezvousService::~RendezvousService() { Shutdown(); }

void RendezvousService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_ = true;
  cv_.notify_all();
}

void RendezvousService::DropScopes(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = scopes_.begin(); it != scopes_.end();) {
    if (absl::StartsWith(it->first, prefix)) {
      it = scopes_.erase(it);
    } else {
      ++it;
    }
  }
}

grpc::Status RendezvousService::Set(grpc::ServerContext*, const v1::RendezvousSetRequest* request,
                                    v1::RendezvousSetResponse*) {
  grpc::Status st = CheckScopeAndKey(request->scope(), request->key());
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous: shutting down");
  scopes_[request->scope()][request->key()] = request->value();
  cv_.notify_all();
  return grpc::Status::OK;
}

grpc::Status RendezvousService::WaitForKeys(
    grpc::ServerContext* context, std::unique_lock<std::mutex>& lock, const std::string& scope,
    const google::protobuf::RepeatedPtrField<std::string>& keys, int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(std::clamp<int64_t>(timeout_ms, 0, kMaxTimeoutMs));
  auto missing = [&] {
    std::vector<std::string> out;
    auto it = scopes_.find(scope);
    for (const std::string& key : keys) {
      if (it == scopes_.end() || !it->second.contains(key)) out.push_back(key);
    }
    return out;
  };
  while (true) {
    if (shutdown_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous: shutting down");
    std::vector<std::string> left = missing();
    if (left.empty()) return grpc::Status::OK;
    if (context != nullptr && context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "rendezvous: cancelled by the client");
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("rendezvous: scope '", scope, "': key(s) ",
                                       absl::StrJoin(left, ", "), " not set within ", timeout_ms,
                                       " ms"));
    }
    // Wake at least every 100 ms to notice client cancellation.
    cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
  }
}

grpc::Status RendezvousService::Get(grpc::ServerContext* context,
                                    const v1::RendezvousGetRequest* request,
                                    v1::RendezvousGetResponse* response) {
  grpc::Status st = CheckScopeAndKey(request->scope(), request->key());
  if (!st.ok()) return st;
  google::protobuf::RepeatedPtrField<std::string> keys;
  keys.Add()->assign(request->key());
  std::unique_lock<std::mutex> lock(mu_);
  st = WaitForKeys(context, lock, request->scope(), keys, request->timeout_ms());
  if (!st.ok()) return st;
  response->set_value(scopes_[request->scope()][request->key()]);
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Add(grpc::ServerContext*, const v1::RendezvousAddRequest* request,
                                    v1::RendezvousAddResponse* response) {
  grpc::Status st = CheckScopeAndKey(request->scope(), request->key());
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous: shutting down");
  std::string& value = scopes_[request->scope()][request->key()];
  int64_t current = 0;
  if (!value.empty() && !absl::SimpleAtoi(value, &current)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("rendezvous: key '", request->key(),
                                     "' holds a value that is not a counter"));
  }
  current += request->delta();
  value = absl::StrCat(current);
  response->set_value(current);
  cv_.notify_all();
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Check(grpc::ServerContext*,
                                      const v1::RendezvousKeysRequest* request,
                                      v1::RendezvousCheckResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = scopes_.find(request->scope());
  bool ready = true;
  for (const std::string& key : request->keys()) {
    if (it == scopes_.end() || !it->second.contains(key)) ready = false;
  }
  response->set_ready(ready);
  return grpc::Status::OK;
}

grpc::Status RendezvousService::Wait(grpc::ServerContext* context,
                                     const v1::RendezvousKeysRequest* request,
                                     v1::RendezvousWaitResponse*) {
  if (request->scope().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rendezvous: scope is empty");
  }
  std::unique_lock<std::mutex> lock(mu_);
  return WaitForKeys(context, lock, request->scope(), request->keys(), request->timeout_ms());
}

grpc::Status RendezvousService::Delete(grpc::ServerContext*,
                                       const v1::RendezvousDeleteRequest* request,
                                       v1::RendezvousDeleteResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = scopes_.find(request->scope());
  int64_t n = 0;
  if (it != scopes_.end()) {
    for (auto k = it->second.begin(); k != it->second.end();) {
      if (absl::StartsWith(k->first, request->prefix())) {
        k = it->second.erase(k);
        ++n;
      } else {
        ++k;
      }
    }
  }
  response->set_num_deleted(n);
  return grpc::Status::OK;
}

}  // namespace tessera
