#include "parallel/kv_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status.h"

namespace tessera {
namespace {

std::string EscapeKey(absl::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  // Never an empty or hidden name: "%" leads names that would start with '.' or be empty.
  std::string out = (key.empty() || key[0] == '.') ? "%" : "";
  out.reserve(key.size() + 1);
  for (unsigned char c : key) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Writes `value` to `path` atomically (temporary file + rename).
absl::Status WriteAtomically(const std::string& path, absl::string_view value) {
  static std::atomic<uint64_t> counter{0};
  std::string tmp = absl::StrCat(path, ".tmp.", getpid(), ".", counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return ErrnoStatus("cannot create", tmp);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    if (!out) return ErrnoStatus("cannot write", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("cannot rename to", path);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileKvStore>> FileKvStore::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the rendezvous directory ", dir, ": ", ec.message()));
  }
  return std::unique_ptr<FileKvStore>(new FileKvStore(dir));
}

std::string FileKvStore::PathOf(absl::string_view key) const {
  return absl::StrCat(dir_, "/", EscapeKey(key));
}

absl::StatusOr<std::string> FileKvStore::TryGet(absl::string_view key) const {
  std::string path = PathOf(key);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("key '", key, "' not set"));
    return ErrnoStatus("cannot read", path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status FileKvStore::Set(absl::string_view key, absl::string_view value) {
  return WriteAtomically(PathOf(key), value);
}

absl::StatusOr<std::string> FileKvStore::Get(absl::string_view key, absl::Duration timeout) {
  std::vector<std::string> keys = {std::string(key)};
  RETURN_IF_ERROR(Wait(keys, timeout));
  return TryGet(key);
}

absl::StatusOr<bool> FileKvStore::Check(absl::Span<const std::string> keys) {
  for (const std::string& key : keys) {
    if (access(PathOf(key).c_str(), F_OK) != 0) return false;
  }
  return true;
}

absl::Status FileKvStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    std::vector<std::string> missing;
    for (const std::string& key : keys) {
      if (access(PathOf(key).c_str(), F_OK) != 0) missing.push_back(key);
    }
    if (missing.empty()) return absl::OkStatus();
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rendezvous store ", dir_, ": keys not set within ", absl::FormatDuration(timeout), ": ",
          absl::StrJoin(missing, ", "), " (did every rank start and use the same store?)"));
    }
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(std::min(backoff, deadline - now)));
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<int64_t> FileKvStore::Add(absl::string_view key, int64_t delta) {
  std::string lock_path = absl::StrCat(dir_, "/.lock");
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot open", lock_path);
  if (flock(fd, LOCK_EX) != 0) {
    absl::Status status = ErrnoStatus("cannot lock", lock_path);
    close(fd);
    return status;
  }
  int64_t value = 0;
  absl::Status status;
  absl::StatusOr<std::string> current = TryGet(key);
  if (current.ok()) {
    if (!absl::SimpleAtoi(*current, &value)) {
      status = absl::FailedPreconditionError(
          absl::StrCat("rendezvous key '", key, "' is not a counter: '", *current, "'"));
    }
  } else if (!absl::IsNotFound(current.status())) {
    status = current.status();
  }
  if (status.ok()) {
    value += delta;
    status = WriteAtomically(PathOf(key), absl::StrCat(value));
  }
  flock(fd, LOCK_UN);
  close(fd);
  if (!status.ok()) return status;
  return value;
}

std::string PrefixKvStore::Full(absl::string_view key) const {
  return absl::StrCat(prefix_, "/", key);
}

std::vector<std::string> PrefixKvStore::Full(absl::Span<const std::string> keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) out.push_back(Full(key));
  return out;
}

absl::Status PrefixKvStore::Set(absl::string_view key, absl::string_view value) {
  return base_->Set(Full(key), value);
}
absl::StatusOr<std::string> PrefixKvStore::Get(absl::string_view key, absl::Duration timeout) {
  return base_->Get(Full(key), timeout);
}
absl::Status PrefixKvStore::Wait(absl::Span<const std::string> keys, absl::Duration timeout) {
  return base_->Wait(Full(keys), timeout);
}
absl::StatusOr<int64_t> PrefixKvStore::Add(absl::string_view key, int64_t delta) {
  return base_->Add(Full(key), delta);
}
absl::StatusOr<bool> PrefixKvStore::Check(absl::Span<const std::string> keys) {
  return base_->Check(Full(keys));
}

}  // namespace tessera
