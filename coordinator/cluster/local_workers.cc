#include "coordinator/cluster/local_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/base/logging.h"

namespace tessera {

using Clock = std::chrono::steady_clock;

LocalWorkerSupervisor::LocalWorkerSupervisor(int num_workers,
                                             std::vector<std::vector<std::string>> args,
                                             std::string program)
    : args_(std::move(args)), program_(std::move(program)), children_(num_workers) {}

LocalWorkerSupervisor::~LocalWorkerSupervisor() { Stop(); }

absl::Status LocalWorkerSupervisor::Spawn(int index) {
  std::vector<std::string> args = args_[index];
  args.insert(args.begin(), "tessera");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork of local worker ", index, ": ", strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    execv(program_.c_str(), argv.data());
    _exit(127);
  }
  children_[index].pid = pid;
  children_[index].started = Clock::now();
  LOG(INFO) << "serve: started local worker " << index << " (pid " << pid << ")";
  return absl::OkStatus();
}

absl::Status LocalWorkerSupervisor::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < static_cast<int>(children_.size()); ++i) {
    absl::Status st = Spawn(i);
    if (!st.ok()) return st;
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
  return absl::OkStatus();
}

void LocalWorkerSupervisor::MonitorLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (stopping_) break;
    const auto now = Clock::now();
    for (int i = 0; i < static_cast<int>(children_.size()); ++i) {
      Child& c = children_[i];
      if (c.pid > 0) {
        int status = 0;
        if (waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
        const std::string how = WIFEXITED(status)
                                    ? absl::StrCat("exited with code ", WEXITSTATUS(status))
                                    : absl::StrCat("was killed by signal ", WTERMSIG(status));
        // Quick deaths back off (a broken checkpoint must not fork-bomb the machine).
        if (now - c.started < std::chrono::seconds(30)) {
          c.backoff = std::min(c.backoff * 2, std::chrono::milliseconds(10000));
        } else {
          c.backoff = std::chrono::milliseconds(500);
        }
        LOG(WARNING) << "serve: local worker " << i << " (pid " << c.pid << ") " << how
                     << "; restarting in " << c.backoff.count() << " ms";
        c.pid = 0;
        c.restart_at = now + c.backoff;
      } else if (now >= c.restart_at) {
        absl::Status st = Spawn(i);
        if (st.ok()) {
          ++restarts_;
        } else {
          LOG(ERROR) << "serve: " << st.message();
          c.restart_at = now + c.backoff;
        }
      }
    }
  }
}

void LocalWorkerSupervisor::Stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !monitor_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (Child& c : children_) {
    if (c.pid > 0) kill(c.pid, SIGTERM);
  }
  const auto deadline = Clock::now() + grace;
  for (Child& c : children_) {
    while (c.pid > 0) {
      int status = 0;
      const pid_t r = waitpid(c.pid, &status, WNOHANG);
      if (r == c.pid || r < 0) {
        c.pid = 0;
        break;
      }
      if (Clock::now() >= deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &status, 0);
        c.pid = 0;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

std::vector<pid_t> LocalWorkerSupervisor::pids() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pid_t> out;
  for (const Child& c : children_) out.push_back(c.pid);
  return out;
}

int LocalWorkerSupervisor::restarts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restarts_;
}

}  // namespace tessera
