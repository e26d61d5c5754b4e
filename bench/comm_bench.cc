// comm_bench: GlooCommunicator all-reduce and all-to-all-v over loopback processes.
//
// For world sizes 2 and 4 (--worlds=2,4) the benchmark forks that many ranks on 127.0.0.1 and
// times each op for message sizes 4 KiB .. 64 MiB (--max_bytes). Reported per size: latency (the
// slowest rank's mean time per op), algorithm bandwidth (bytes / time) and bus bandwidth as
// nccl-tests define it (all-reduce: algbw * 2(n-1)/n; all-to-all: algbw * (n-1)/n), and the bus
// bandwidth as a ratio to this machine's single-thread memory read bandwidth measured in the
// same run (bench/machine_limits.h): TCP over loopback copies every byte at least twice through
// the kernel, so one core's copy bandwidth bounds it.
//
// Usage: comm_bench [--worlds=2,4] [--max_bytes=67108864] [--min_bytes=4096]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/machine_limits.h"
#include "kernels/base/status.h"
#include "parallel/gloo_communicator.h"
#include "parallel/kv_store.h"

namespace tessera {
namespace {

struct Config {
  std::vector<int> worlds = {2, 4};
  int64_t min_bytes = 4096;
  int64_t max_bytes = 64 << 20;
};

// Seconds per op: the slowest rank's mean over `iters` after one warm-up, ranks aligned by a
// barrier before timing.
template <typename F>
absl::StatusOr<double> TimeOp(Communicator& comm, int iters, F&& op) {
  RETURN_IF_ERROR(op());
  RETURN_IF_ERROR(comm.Barrier());
  const absl::Time start = absl::Now();
  for (int i = 0; i < iters; ++i) RETURN_IF_ERROR(op());
  double seconds = absl::ToDoubleSeconds(absl::Now() - start) / iters;
  Tensor t = Tensor::FromVector(absl::Span<const float>({static_cast<float>(seconds)}), {1});
  RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kMax));
  return static_cast<double>(t.data<float>()[0]);
}

void Report(int rank, const char* op, int world, int64_t bytes, double seconds, double bus_factor,
            double mem_bw) {
  if (rank != 0) return;
  const double algbw = bytes / seconds / 1e9;
  const double busbw = algbw * bus_factor;
  std::printf("%-10s %5d %10lld %12.1f %10.3f %10.3f %10.4f\n", op, world,
              static_cast<long long>(bytes), seconds * 1e6, algbw, busbw, busbw * 1e9 / mem_bw);
  std::fflush(stdout);
}

absl::Status RunRank(int rank, int world, const std::string& dir, const Config& config,
                     double mem_bw) {
  ASSIGN_OR_RETURN(auto store, FileKvStore::Open(dir));
  GlooCommOptions options;
  options.store = std::shared_ptr<KvStore>(std::move(store));
  options.rank = rank;
  options.size = world;
  options.timeout = absl::Seconds(120);
  ASSIGN_OR_RETURN(auto comm, GlooCommunicator::Create(options));
  for (int64_t bytes = config.min_bytes; bytes <= config.max_bytes; bytes *= 4) {
    const int iters = static_cast<int>(std::clamp<int64_t>((256 << 20) / bytes, 3, 200));
    const int64_t n = bytes / 4;
    ASSIGN_OR_RETURN(Tensor x, Tensor::Zeros({n}, DType::kF32));
    ASSIGN_OR_RETURN(double ar, TimeOp(*comm, iters, [&] {
                       return comm->AllReduce(x, ReduceOp::kSum);
                     }));
    Report(rank, "allreduce", world, bytes, ar, 2.0 * (world - 1) / world, mem_bw);

    // All-to-all-v: every rank sends `bytes` in total, an equal share to each rank.
    const int64_t cols = 64;  // 256-byte rows
    const int64_t rows_per_peer = std::max<int64_t>(1, n / cols / world);
    std::vector<int64_t> splits(world, rows_per_peer);
    ASSIGN_OR_RETURN(Tensor in, Tensor::Zeros({rows_per_peer * world, cols}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({rows_per_peer * world, cols}, DType::kF32));
    ASSIGN_OR_RETURN(double a2a, TimeOp(*comm, iters, [&] {
                       return comm->AllToAllV(in, splits, out, splits);
                     }));
    Report(rank, "alltoallv", world, static_cast<int64_t>(in.nbytes()), a2a,
           static_cast<double>(world - 1) / world, mem_bw);
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--worlds=")) {
      config.worlds.clear();
      for (absl::string_view w : absl::StrSplit(arg, ',')) {
        int v = 0;
        if (!absl::SimpleAtoi(w, &v) || v < 1) {
          std::fprintf(stderr, "bad --worlds entry '%s'\n", std::string(w).c_str());
          return 2;
        }
        config.worlds.push_back(v);
      }
    } else if (absl::ConsumePrefix(&arg, "--max_bytes=")) {
      if (!absl::SimpleAtoi(arg, &config.max_bytes)) return 2;
    } else if (absl::ConsumePrefix(&arg, "--min_bytes=")) {
      if (!absl::SimpleAtoi(arg, &config.min_bytes)) return 2;
    } else {
      std::fprintf(stderr, "usage: comm_bench [--worlds=2,4] [--max_bytes=N] [--min_bytes=N]\n");
      return 2;
    }
  }
  // Measured before any rank exists (the probe's threads end before the fork).
  const double mem_bw = bench::MeasureReadBandwidth(1);
  std::printf("single-thread read bandwidth: %.2f GB/s (ratio column = busbw / this)\n",
              mem_bw / 1e9);
  std::printf("%-10s %5s %10s %12s %10s %10s %10s\n", "op", "world", "bytes", "latency_us",
              "algbw_GBs", "busbw_GBs", "ratio");
  std::fflush(stdout);  // the ranks are forks: nothing buffered may be inherited
  for (int world : config.worlds) {
    char tmpl[] = "/tmp/tessera_comm_bench_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return 1;
    const std::string dir = tmpl;
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pid_t pid = fork();
      if (pid == 0) {
        absl::Status s = RunRank(r, world, dir, config, mem_bw);
        if (!s.ok()) std::fprintf(stderr, "rank %d: %s\n", r, s.ToString().c_str());
        std::fflush(stdout);
        _exit(s.ok() ? 0 : 1);
      }
      pids.push_back(pid);
    }
    int failures = 0;
    for (pid_t pid : pids) {
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
    }
    std::string cleanup = absl::StrCat("rm -rf ", dir);
    (void)!std::system(cleanup.c_str());
    if (failures > 0) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
