// CommStats: cheap per-op timers of this process's communicators, for the communication share
// of a step (bench/, `tessera generate --json`).
//
// Every blocking call of a communicator (GlooCommunicator's collectives, and the Wait of an async
// op or of a send / recv) adds its wall time on the calling thread, one call and its payload bytes
// to the op's counters: what the caller spent inside the communicator, waiting included. An op
// issued async and waited for later counts only the Wait (the time the caller was blocked), so
// overlapped communication is not counted. Two steady_clock reads and three relaxed atomic adds
// per call (~50 ns).
//
// Thread safety: all functions may be called from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace tessera {

enum class CommOp {
  kAllReduce,
  kAllGather,
  kAllGatherV,
  kReduceScatter,
  kAllToAllV,
  kBroadcast,
  kBarrier,
  kSend,       // blocking Send, or the Wait of a SendAsync
  kRecv,       // blocking Recv, or the Wait of a RecvAsync
  kAsyncWait,  // the Wait of an async collective
  kNumOps,
};
// "all_reduce", "all_gather", ...
const char* CommOpName(CommOp op);

struct CommOpStats {
  uint64_t calls = 0;
  uint64_t nanos = 0;
  uint64_t bytes = 0;
};
using CommStats = std::array<CommOpStats, static_cast<int>(CommOp::kNumOps)>;

void RecordCommOp(CommOp op, uint64_t nanos, uint64_t bytes);
// The counters since the process started (differences of two snapshots give a phase's).
CommStats CommStatsSnapshot();
CommStats CommStatsDiff(const CommStats& after, const CommStats& before);
uint64_t TotalCommNanos(const CommStats& stats);

// Records the scope's wall time under `op` when it ends (unless Cancel()ed).
class CommTimer {
 public:
  CommTimer(CommOp op, uint64_t bytes)
      : op_(op), bytes_(bytes), start_(std::chrono::steady_clock::now()) {}
  ~CommTimer() {
    if (active_) {
      RecordCommOp(op_, std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - start_)
                            .count(),
                   bytes_);
    }
  }
  void Cancel() { active_ = false; }
  CommTimer(const CommTimer&) = delete;
  CommTimer& operator=(const CommTimer&) = delete;

 private:
  CommOp op_;
  uint64_t bytes_;
  std::chrono::steady_clock::time_point start_;
  bool active_ = true;
};

}  // namespace tessera
