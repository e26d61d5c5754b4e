#include "parallel/comm_stats.h"

#include <atomic>

namespace tessera {
namespace {

struct Counters {
  std::atomic<uint64_t> calls{0}, nanos{0}, bytes{0};
};
Counters g_counters[static_cast<int>(CommOp::kNumOps)];

}  // namespace

const char* CommOpName(CommOp op) {
  switch (op) {
    case CommOp::kAllReduce: return "all_reduce";
    case CommOp::kAllGather: return "all_gather";
    case CommOp::kAllGatherV: return "all_gather_v";
    case CommOp::kReduceScatter: return "reduce_scatter";
    case CommOp::kAllToAllV: return "all_to_all_v";
    case CommOp::kBroadcast: return "broadcast";
    case CommOp::kBarrier: return "barrier";
    case CommOp::kSend: return "send";
    case CommOp::kRecv: return "recv";
    case CommOp::kAsyncWait: return "async_wait";
    case CommOp::kNumOps: break;
  }
  return "?";
}

void RecordCommOp(CommOp op, uint64_t nanos, uint64_t bytes) {
  Counters& c = g_counters[static_cast<int>(op)];
  c.calls.fetch_add(1, std::memory_order_relaxed);
  c.nanos.fetch_add(nanos, std::memory_order_relaxed);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
}

CommStats CommStatsSnapshot() {
  CommStats s;
  for (int i = 0; i < static_cast<int>(CommOp::kNumOps); ++i) {
    s[i].calls = g_counters[i].calls.load(std::memory_order_relaxed);
    s[i].nanos = g_counters[i].nanos.load(std::memory_order_relaxed);
    s[i].bytes = g_counters[i].bytes.load(std::memory_order_relaxed);
  }
  return s;
}

CommStats CommStatsDiff(const CommStats& after, const CommStats& before) {
  CommStats d;
  for (size_t i = 0; i < d.size(); ++i) {
    d[i].calls = after[i].calls - before[i].calls;
    d[i].nanos = after[i].nanos - before[i].nanos;
    d[i].bytes = after[i].bytes - before[i].bytes;
  }
  return d;
}

uint64_t TotalCommNanos(const CommStats& stats) {
  uint64_t total = 0;
  for (const CommOpStats& s : stats) total += s.nanos;
  return total;
}

}  // namespace tessera
