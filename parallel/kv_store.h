// KvStore: the rendezvous key-value store collective libraries bootstrap through.
//
// Ranks of a group publish their transport addresses (Gloo) or unique ids (NCCL) under agreed
// keys and read everybody else's. Contract: values are opaque bytes; Set overwrites; Get and Wait
// block until every key exists or the timeout passes (DEADLINE_EXCEEDED naming the missing keys);
// Add treats the key as a counter stored as decimal ASCII text ("3") and returns the value after
// adding, atomically across every process sharing the store. Keys are scoped by the caller
// (PrefixKvStore) so groups and generations never read each other's keys.
//
// Implementations: FileKvStore (a directory shared by the processes: tests, single-machine runs),
// PrefixKvStore (a namespace inside another store), and the coordinator's gRPC Rendezvous service
// client (worker/rendezvous_kv_store.h). Thread safety: every implementation is safe to call from
// several threads and processes at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace tessera {

class KvStore {
 public:
  virtual ~KvStore() = default;

  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  // Blocks until `key` exists (at most `timeout`) and returns its value.
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;
  // Blocks until every key exists (at most `timeout`).
  virtual absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) = 0;
  // Atomically adds `delta` to the counter at `key` (missing = 0) and returns the new value.
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;
  // Whether every key exists now (never blocks).
  virtual absl::StatusOr<bool> Check(absl::Span<const std::string> keys) = 0;
};

// A store in a directory: one file per key (name escaped), written to a temporary file and
// renamed so readers never see partial values; Add holds an flock on `<dir>/.lock`. Blocking
// reads poll with a back-off from 1 ms to 20 ms. Works for processes on one machine (or a shared
// file system with atomic rename and flock).
class FileKvStore : public KvStore {
 public:
  // Creates `dir` (and parents) when missing.
  static absl::StatusOr<std::unique_ptr<FileKvStore>> Open(const std::string& dir);

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  const std::string& dir() const { return dir_; }

 private:
  explicit FileKvStore(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(absl::string_view key) const;
  // Reads the value of `key`; NOT_FOUND when it does not exist.
  absl::StatusOr<std::string> TryGet(absl::string_view key) const;

  std::string dir_;
};

// Every key of `base` under "<prefix>/": groups, generations and sub-groups use disjoint
// prefixes of one store.
class PrefixKvStore : public KvStore {
 public:
  PrefixKvStore(std::shared_ptr<KvStore> base, std::string prefix)
      : base_(std::move(base)), prefix_(std::move(prefix)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::Status Wait(absl::Span<const std::string> keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string Full(absl::string_view key) const;
  std::vector<std::string> Full(absl::Span<const std::string> keys) const;

  std::shared_ptr<KvStore> base_;
  std::string prefix_;
};

}  // namespace tessera
