// CommStats: the per-op timers of the Gloo communicator count calls, payload bytes and time of
// blocking collectives and of the Wait of async sends / receives.
#include "parallel/comm_stats.h"

#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "tests/parallel/multi_process.h"

namespace tessera {
namespace {

using testing::ConnectRank;
using testing::RunRanks;

TEST(CommStatsTest, CountsBlockingCollectivesAndP2pWaits) {
  auto results = RunRanks(2, [](int rank, int world, const std::string& dir) -> absl::Status {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const CommStats before = CommStatsSnapshot();
    Tensor t = Tensor::Zeros({256}, DType::kF32).value();
    RETURN_IF_ERROR(comm->AllReduce(t, ReduceOp::kSum));
    RETURN_IF_ERROR(comm->AllReduce(t, ReduceOp::kSum));
    std::unique_ptr<Work> w = rank == 0 ? comm->SendAsync(t, 1, 7) : comm->RecvAsync(t, 0, 7);
    RETURN_IF_ERROR(w->Wait());
    w.reset();  // the destructor's Wait of a finished op is not counted again
    const CommStats d = CommStatsDiff(CommStatsSnapshot(), before);
    const CommOpStats& ar = d[static_cast<int>(CommOp::kAllReduce)];
    RANK_EXPECT(ar.calls == 2 && ar.bytes == 2 * 256 * 4, ar.calls, " ", ar.bytes);
    const CommOpStats& p2p = d[static_cast<int>(rank == 0 ? CommOp::kSend : CommOp::kRecv)];
    RANK_EXPECT(p2p.calls == 1 && p2p.bytes == 256 * 4, p2p.calls, " ", p2p.bytes);
    RANK_EXPECT(TotalCommNanos(d) >= ar.nanos && ar.nanos > 0);
    RANK_EXPECT(d[static_cast<int>(CommOp::kAllToAllV)].calls == 0);
    return absl::OkStatus();
  });
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].message;
  }
}

TEST(CommStatsTest, NamesEveryOp) {
  for (int i = 0; i < static_cast<int>(CommOp::kNumOps); ++i) {
    EXPECT_STRNE(CommOpName(static_cast<CommOp>(i)), "?");
  }
}

}  // namespace
}  // namespace tessera
