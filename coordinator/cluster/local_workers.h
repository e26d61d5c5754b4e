// LocalWorkerSupervisor: the worker processes `tessera serve --local-workers N` starts on this
// machine (fork/exec of /proc/self/exe worker --coordinator 127.0.0.1:PORT ...).
//
// Contract: Start() spawns every worker; a monitor thread restarts a worker that exits (for any
// reason other than Stop()) after a backoff that grows from 0.5 s to 10 s while it keeps dying
// within 30 s of its start, and logs each exit with its code or signal. Children get SIGKILL if
// the supervisor's process dies (PR_SET_PDEATHSIG), inherit stdout/stderr, and start with an
// empty signal mask. Stop() sends SIGTERM, waits up to `grace`, then SIGKILLs and reaps them.
//
// Thread safety: Start()/Stop() from one controlling thread; pids() and restarts() from any.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace tessera {

class LocalWorkerSupervisor {
 public:
  // `args_of(i)`: the argv (without the program) of worker i, e.g. {"worker", "--coordinator",
  // ...}. `program`: the executable (default: /proc/self/exe).
  LocalWorkerSupervisor(int num_workers, std::vector<std::vector<std::string>> args,
                        std::string program = "/proc/self/exe");
  ~LocalWorkerSupervisor();

  absl::Status Start();
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  std::vector<pid_t> pids() const;  // 0 while a worker is not running
  int restarts() const;

 private:
  absl::Status Spawn(int index);  // mu_ held
  void MonitorLoop();

  const std::vector<std::vector<std::string>> args_;
  const std::string program_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Child {
    pid_t pid = 0;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point restart_at;
    std::chrono::milliseconds backoff{500};
  };
  std::vector<Child> children_;
  int restarts_ = 0;
  bool stopping_ = false;
  std::thread monitor_;
};

}  // namespace tessera
