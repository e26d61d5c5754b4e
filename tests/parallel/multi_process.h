// Multi-process test harness: runs a function as `world` real processes (fork of the test
// binary) that talk over Gloo on 127.0.0.1 through a FileKvStore in a fresh directory.
//
// Each rank's function returns an absl::Status; the parent collects every rank's status through
// a pipe, kills ranks that outlive the limit, and returns one result per rank. Call from a
// single-threaded test process (fork copies only the calling thread). Header-only.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "parallel/gloo_communicator.h"
#include "parallel/kv_store.h"
#include "tests/test_util.h"

namespace tessera::testing {

// Returns from the rank's function with an error naming the line when `cond` is false.
#define RANK_EXPECT(cond, ...)                                                          \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": " #cond " ", \
                                              ##__VA_ARGS__));                          \
    }                                                                                   \
  } while (0)

struct RankResult {
  int exit_code = -1;   // -1: killed (signal or limit)
  std::string message;  // "OK" or the status text
  bool ok() const { return exit_code == 0; }
};

// One rank's body: its rank, the world size and the rendezvous directory.
using RankFn = std::function<absl::Status(int rank, int world, const std::string& store_dir)>;

inline std::vector<RankResult> RunRanks(int world, const RankFn& fn,
                                        absl::Duration limit = absl::Seconds(20)) {
  static int counter = 0;
  const std::string dir = MakeTempDir(absl::StrCat("ranks_", counter++));
  std::vector<pid_t> pids(world, -1);
  std::vector<int> fds(world, -1);
  for (int r = 0; r < world; ++r) {
    int p[2];
    if (pipe(p) != 0) return {};
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      absl::Status s = fn(r, world, dir);
      std::string text = s.ok() ? "OK" : s.ToString();
      (void)!write(p[1], text.data(), text.size());
      close(p[1]);
      _exit(s.ok() ? 0 : 1);
    }
    close(p[1]);
    pids[r] = pid;
    fds[r] = p[0];
  }
  std::vector<RankResult> results(world);
  const absl::Time deadline = absl::Now() + limit;
  int remaining = world;
  while (remaining > 0) {
    for (int r = 0; r < world; ++r) {
      if (pids[r] < 0) continue;
      int status = 0;
      pid_t got = waitpid(pids[r], &status, WNOHANG);
      if (got == pids[r]) {
        results[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        pids[r] = -1;
        --remaining;
      }
    }
    if (remaining == 0) break;
    if (absl::Now() > deadline) {
      for (int r = 0; r < world; ++r) {
        if (pids[r] < 0) continue;
        kill(pids[r], SIGKILL);
        waitpid(pids[r], nullptr, 0);
        results[r].message = "killed: still running at the harness limit";
        pids[r] = -1;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int r = 0; r < world; ++r) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[r], buf, sizeof(buf))) > 0) results[r].message.append(buf, n);
    close(fds[r]);
  }
  return results;
}

inline std::string Describe(const std::vector<RankResult>& results) {
  std::string out;
  for (size_t r = 0; r < results.size(); ++r) {
    absl::StrAppend(&out, "\n  rank ", r, " exit ", results[r].exit_code, ": ",
                    results[r].message);
  }
  return out;
}

inline absl::StatusOr<std::unique_ptr<GlooCommunicator>> ConnectRank(
    int rank, int world, const std::string& store_dir,
    absl::Duration timeout = absl::Seconds(10)) {
  auto store = FileKvStore::Open(store_dir);
  if (!store.ok()) return store.status();
  GlooCommOptions options;
  options.store = std::shared_ptr<KvStore>(std::move(*store));
  options.rank = rank;
  options.size = world;
  options.timeout = timeout;
  return GlooCommunicator::Create(options);
}

}  // namespace tessera::testing
