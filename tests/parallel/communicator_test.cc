// GlooCommunicator over real processes on 127.0.0.1: every op and dtype against values computed
// locally, odd sizes, zero-row participants, sub-groups, async overlap, send/recv, and failure
// (a rank that exits or hangs mid-collective).
#include "parallel/gloo_communicator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "tests/parallel/multi_process.h"

namespace tessera {
namespace {

using testing::ConnectRank;
using testing::Describe;
using testing::RankResult;
using testing::RunRanks;

const DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64};

// Element i of rank r's input: small integers, exact in every dtype and in sums over 4 ranks.
float Val(int r, int64_t i, int salt = 0) {
  return static_cast<float>(((r + 1) * 7 + i * 3 + salt * 5) % 23 - 11);
}

absl::StatusOr<Tensor> Input(int r, std::vector<int64_t> shape, DType dtype, int salt = 0) {
  std::vector<float> v(NumElements(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = Val(r, static_cast<int64_t>(i), salt);
  return Tensor::FromVector(absl::Span<const float>(v), shape).To(dtype);
}

absl::StatusOr<std::vector<float>> Floats(const Tensor& t) {
  ASSIGN_OR_RETURN(Tensor f, t.To(DType::kF32));
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

// First index where got != want, or -1.
int64_t FirstMismatch(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

float Combine(ReduceOp op, float a, float b) {
  switch (op) {
    case ReduceOp::kSum:
      return a + b;
    case ReduceOp::kMax:
      return std::max(a, b);
    case ReduceOp::kMin:
      return std::min(a, b);
  }
  return 0;
}

void ExpectAllOk(const std::vector<RankResult>& results) {
  for (const RankResult& r : results) ASSERT_TRUE(r.ok()) << Describe(results);
}

class WorldTest : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(Sizes, WorldTest, ::testing::Values(2, 3, 4));

TEST_P(WorldTest, AllReduceEveryDTypeAndOpMatchesLocalReduction) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    for (DType dtype : kDTypes) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
        for (int64_t n : {1, 37, 1000}) {
          ASSIGN_OR_RETURN(Tensor t, Input(rank, {n}, dtype));
          RETURN_IF_ERROR(comm->AllReduce(t, op));
          std::vector<float> want(n);
          for (int64_t i = 0; i < n; ++i) {
            want[i] = Val(0, i);
            for (int r = 1; r < world; ++r) want[i] = Combine(op, want[i], Val(r, i));
          }
          ASSIGN_OR_RETURN(std::vector<float> got, Floats(t));
          int64_t bad = FirstMismatch(got, want);
          RANK_EXPECT(bad < 0, DTypeName(dtype), " ", ReduceOpName(op), " n=", n, " at ", bad,
                      ": ", got[bad], " vs ", want[bad]);
        }
      }
    }
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, AllReduceOfManySegmentsMatches) {
  // 300007 f32 = 1.2 MB: several of Gloo's 1 MB segments, an odd element count.
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const int64_t n = 300007;
    ASSIGN_OR_RETURN(Tensor t, Input(rank, {n}, DType::kF32));
    RETURN_IF_ERROR(comm->AllReduce(t, ReduceOp::kSum));
    const float* got = t.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      float want = 0;
      for (int r = 0; r < world; ++r) want += Val(r, i);
      RANK_EXPECT(got[i] == want, "at ", i);
    }
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, Bf16SumOfRandomValuesIsWithinBf16Tolerance) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const int64_t n = 4099;
    ASSIGN_OR_RETURN(Tensor t, testing::RandomTensor({n}, 100 + rank).To(DType::kBF16));
    RETURN_IF_ERROR(comm->AllReduce(t, ReduceOp::kSum));
    ASSIGN_OR_RETURN(Tensor want, Tensor::Zeros({n}, DType::kF32));
    for (int r = 0; r < world; ++r) {
      // The inputs as the ranks sent them (rounded to bf16), summed in f32.
      ASSIGN_OR_RETURN(Tensor x, testing::RandomTensor({n}, 100 + r).To(DType::kBF16));
      ASSIGN_OR_RETURN(Tensor xf, x.To(DType::kF32));
      for (int64_t i = 0; i < n; ++i) want.data<float>()[i] += xf.data<float>()[i];
    }
    double err = testing::RelativeError(t, want);
    RANK_EXPECT(err < 1e-2, "relative error ", err);
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, AllGatherConcatenatesInRankOrder) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    for (DType dtype : kDTypes) {
      ASSIGN_OR_RETURN(Tensor in, Input(rank, {3, 5}, dtype));
      ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({3 * world, 5}, dtype));
      RETURN_IF_ERROR(comm->AllGather(in, out));
      std::vector<float> want;
      for (int r = 0; r < world; ++r) {
        for (int i = 0; i < 15; ++i) want.push_back(Val(r, i));
      }
      ASSIGN_OR_RETURN(std::vector<float> got, Floats(out));
      RANK_EXPECT(FirstMismatch(got, want) < 0, DTypeName(dtype));
    }
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, AllGatherVWithAZeroRowRank) {
  // Rank r contributes r rows, so rank 0 contributes none.
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    std::vector<int64_t> splits(world);
    int64_t total = 0;
    for (int r = 0; r < world; ++r) total += splits[r] = r;
    ASSIGN_OR_RETURN(Tensor in, Input(rank, {rank, 4}, DType::kI64));
    ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({total, 4}, DType::kI64));
    RETURN_IF_ERROR(comm->AllGatherV(in, out, splits));
    std::vector<float> want;
    for (int r = 0; r < world; ++r) {
      for (int i = 0; i < r * 4; ++i) want.push_back(Val(r, i));
    }
    ASSIGN_OR_RETURN(std::vector<float> got, Floats(out));
    RANK_EXPECT(FirstMismatch(got, want) < 0);
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, ReduceScatterGivesEachRankItsReducedBlock) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    for (DType dtype : kDTypes) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        for (int64_t rows : {1, 7}) {
          ASSIGN_OR_RETURN(Tensor in, Input(rank, {rows * world, 3}, dtype));
          ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({rows, 3}, dtype));
          RETURN_IF_ERROR(comm->ReduceScatter(in, out, op));
          std::vector<float> want(rows * 3);
          for (int64_t i = 0; i < rows * 3; ++i) {
            const int64_t j = rank * rows * 3 + i;
            want[i] = Val(0, j);
            for (int r = 1; r < world; ++r) want[i] = Combine(op, want[i], Val(r, j));
          }
          ASSIGN_OR_RETURN(std::vector<float> got, Floats(out));
          RANK_EXPECT(FirstMismatch(got, want) < 0, DTypeName(dtype), " ", ReduceOpName(op),
                      " rows=", rows);
        }
      }
    }
    return absl::OkStatus();
  }));
}

// Rows rank a sends rank b. Two ranks: rank 0 sends nothing, receives 2 rows. More: rank 0 sends
// and receives nothing, and some other pairs are empty too.
int64_t Rows(int a, int b, int world) {
  if (world == 2) return a == 1 ? 2 + b : 0;
  return (a == 0 || b == 0) ? 0 : (a + 2 * b) % 3;
}
float A2aVal(int a, int b, int64_t row, int col) {
  return static_cast<float>((a * 37 + b * 11 + row * 5 + col) % 200 - 100);
}

TEST_P(WorldTest, AllToAllVRoutesRowsIncludingZeroRowRanks) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const int cols = 3;
    for (DType dtype : kDTypes) {
      std::vector<int64_t> in_splits(world), out_splits(world);
      std::vector<float> in_vals, want;
      for (int p = 0; p < world; ++p) {
        in_splits[p] = Rows(rank, p, world);
        out_splits[p] = Rows(p, rank, world);
        for (int64_t j = 0; j < in_splits[p]; ++j) {
          for (int c = 0; c < cols; ++c) in_vals.push_back(A2aVal(rank, p, j, c));
        }
        for (int64_t j = 0; j < out_splits[p]; ++j) {
          for (int c = 0; c < cols; ++c) want.push_back(A2aVal(p, rank, j, c));
        }
      }
      const int64_t in_rows = static_cast<int64_t>(in_vals.size()) / cols;
      const int64_t out_rows = static_cast<int64_t>(want.size()) / cols;
      ASSIGN_OR_RETURN(Tensor in,
                       Tensor::FromVector(absl::Span<const float>(in_vals), {in_rows, cols})
                           .To(dtype));
      ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({out_rows, cols}, dtype));
      RETURN_IF_ERROR(comm->AllToAllV(in, in_splits, out, out_splits));
      ASSIGN_OR_RETURN(std::vector<float> got, Floats(out));
      RANK_EXPECT(FirstMismatch(got, want) < 0, DTypeName(dtype));
    }
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, BroadcastCopiesTheRootsTensor) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    for (DType dtype : kDTypes) {
      for (int root : {0, world - 1}) {
        ASSIGN_OR_RETURN(Tensor t, Input(rank, {11, 3}, dtype, /*salt=*/root));
        RETURN_IF_ERROR(comm->Broadcast(t, root));
        std::vector<float> want(33);
        for (int i = 0; i < 33; ++i) want[i] = Val(root, i, root);
        ASSIGN_OR_RETURN(std::vector<float> got, Floats(t));
        RANK_EXPECT(FirstMismatch(got, want) < 0, DTypeName(dtype), " root ", root);
      }
    }
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, BarrierReturnsOnlyAfterEveryRankArrived) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    ASSIGN_OR_RETURN(auto store, FileKvStore::Open(dir + "/arrivals"));
    usleep(rank * 100000);  // later ranks arrive later
    RETURN_IF_ERROR(store->Set(absl::StrCat("arrived", rank), "1"));
    RETURN_IF_ERROR(comm->Barrier());
    std::vector<std::string> keys;
    for (int r = 0; r < world; ++r) keys.push_back(absl::StrCat("arrived", r));
    ASSIGN_OR_RETURN(bool all, store->Check(keys));
    RANK_EXPECT(all, "a rank left the barrier before every rank arrived");
    return absl::OkStatus();
  }));
}

TEST_P(WorldTest, SendRecvRingWithOutOfOrderTags) {
  ExpectAllOk(RunRanks(GetParam(), [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const int right = (rank + 1) % world;
    const int left = (rank + world - 1) % world;
    ASSIGN_OR_RETURN(Tensor a, Input(rank, {257}, DType::kBF16, 1));
    ASSIGN_OR_RETURN(Tensor b, Input(rank, {5, 2}, DType::kI64, 2));
    auto send_a = comm->SendAsync(a, right, /*tag=*/1);
    auto send_b = comm->SendAsync(b, right, /*tag=*/2);
    ASSIGN_OR_RETURN(Tensor got_b, Tensor::Zeros({5, 2}, DType::kI64));
    ASSIGN_OR_RETURN(Tensor got_a, Tensor::Zeros({257}, DType::kBF16));
    RETURN_IF_ERROR(comm->Recv(got_b, left, 2));  // the later tag first
    RETURN_IF_ERROR(comm->Recv(got_a, left, 1));
    RETURN_IF_ERROR(send_a->Wait());
    RETURN_IF_ERROR(send_b->Wait());
    ASSIGN_OR_RETURN(Tensor want_a, Input(left, {257}, DType::kBF16, 1));
    ASSIGN_OR_RETURN(Tensor want_b, Input(left, {5, 2}, DType::kI64, 2));
    ASSIGN_OR_RETURN(std::vector<float> ga, Floats(got_a));
    ASSIGN_OR_RETURN(std::vector<float> wa, Floats(want_a));
    ASSIGN_OR_RETURN(std::vector<float> gb, Floats(got_b));
    ASSIGN_OR_RETURN(std::vector<float> wb, Floats(want_b));
    RANK_EXPECT(FirstMismatch(ga, wa) < 0 && FirstMismatch(gb, wb) < 0);
    return absl::OkStatus();
  }));
}

TEST(Communicator, AsyncOpsOverlapAndCompleteInAnyWaitOrder) {
  ExpectAllOk(RunRanks(3, [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    const int64_t n = 200003;
    ASSIGN_OR_RETURN(Tensor big, Input(rank, {n}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor in, Input(rank, {2 * world, 4}, DType::kF32, 3));
    ASSIGN_OR_RETURN(Tensor gathered, Tensor::Zeros({2 * world * world, 4}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor a2a_out, Tensor::Zeros({2 * world, 4}, DType::kF32));
    std::vector<int64_t> splits(world, 2);
    auto w1 = comm->AllReduceAsync(big, ReduceOp::kSum);
    auto w2 = comm->AllGatherAsync(in, gathered);
    auto w3 = comm->AllToAllVAsync(in, splits, a2a_out, splits);
    RETURN_IF_ERROR(w3->Wait());
    RETURN_IF_ERROR(w2->Wait());
    RETURN_IF_ERROR(w1->Wait(absl::Seconds(10)));
    for (int64_t i = 0; i < n; ++i) {
      float want = 0;
      for (int r = 0; r < world; ++r) want += Val(r, i);
      RANK_EXPECT(big.data<float>()[i] == want, "all-reduce at ", i);
    }
    for (int r = 0; r < world; ++r) {
      for (int i = 0; i < 8 * world; ++i) {
        RANK_EXPECT(gathered.data<float>()[r * 8 * world + i] == Val(r, i, 3), "gather");
      }
      for (int i = 0; i < 8; ++i) {  // rank r's block `rank` (2 rows x 4)
        RANK_EXPECT(a2a_out.data<float>()[r * 8 + i] == Val(r, rank * 8 + i, 3), "a2a");
      }
    }
    return absl::OkStatus();
  }));
}

TEST(Communicator, WaitWithAShortTimeoutLeavesTheOpRunning) {
  ExpectAllOk(RunRanks(2, [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    ASSIGN_OR_RETURN(Tensor t, Input(rank, {64}, DType::kF32));
    if (rank == 0) {
      usleep(400000);
      RETURN_IF_ERROR(comm->Send(t, 1, 7));
    } else {
      auto recv = comm->RecvAsync(t, 0, 7);
      absl::Status early = recv->Wait(absl::Milliseconds(50));
      RANK_EXPECT(absl::IsDeadlineExceeded(early), early.ToString());
      RETURN_IF_ERROR(recv->Wait());
      RANK_EXPECT(t.data<float>()[5] == Val(0, 5));
    }
    RETURN_IF_ERROR(comm->health());
    return comm->Barrier();  // still usable
  }));
}

TEST(Communicator, SubGroupsFromNewGroupAndSplit) {
  ExpectAllOk(RunRanks(4, [](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir));
    // tp pairs {0,1} {2,3}.
    std::vector<int> tp_ranks = rank < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3};
    ASSIGN_OR_RETURN(auto tp, comm->NewGroup(tp_ranks, "tp"));
    RANK_EXPECT(tp->size() == 2 && tp->rank() == rank % 2);
    Tensor x = Tensor::FromVector(absl::Span<const float>({static_cast<float>(rank)}), {1});
    RETURN_IF_ERROR(tp->AllReduce(x, ReduceOp::kSum));
    RANK_EXPECT(x.data<float>()[0] == tp_ranks[0] + tp_ranks[1], x.data<float>()[0]);
    // ep groups by parity, ordered by descending world rank.
    ASSIGN_OR_RETURN(auto ep, comm->Split(rank % 2, -rank));
    RANK_EXPECT(ep != nullptr && ep->size() == 2);
    RANK_EXPECT(ep->rank() == (rank >= 2 ? 0 : 1), "ep rank ", ep->rank());
    Tensor y = Tensor::FromVector(absl::Span<const float>({static_cast<float>(rank)}), {1});
    RETURN_IF_ERROR(ep->Broadcast(y, 0));  // from the highest world rank of the parity
    RANK_EXPECT(y.data<float>()[0] == (rank % 2 == 0 ? 2 : 3), y.data<float>()[0]);
    // The same list again is a fresh group; both stay usable, and the parent too.
    ASSIGN_OR_RETURN(auto tp2, comm->NewGroup(tp_ranks, ""));
    Tensor z = Tensor::FromVector(absl::Span<const float>({1.0f}), {1});
    RETURN_IF_ERROR(tp2->AllReduce(z, ReduceOp::kSum));
    RETURN_IF_ERROR(tp->AllReduce(z, ReduceOp::kSum));
    RANK_EXPECT(z.data<float>()[0] == 4, z.data<float>()[0]);
    // A negative color joins no group.
    ASSIGN_OR_RETURN(auto none, comm->Split(rank == 3 ? -1 : 0, rank));
    RANK_EXPECT((none == nullptr) == (rank == 3));
    if (none != nullptr) RANK_EXPECT(none->size() == 3);
    return comm->Barrier();
  }));
}

TEST(Communicator, RankThatExitsMidCollectiveFailsTheOthersFast) {
  const absl::Duration timeout = absl::Seconds(2);
  auto results = RunRanks(3, [timeout](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir, timeout));
    RETURN_IF_ERROR(comm->Barrier());
    if (rank == 2) _exit(0);  // dies without a goodbye
    ASSIGN_OR_RETURN(Tensor t, Input(rank, {100000}, DType::kF32));
    const absl::Time start = absl::Now();
    absl::Status s = comm->AllReduce(t, ReduceOp::kSum);
    const absl::Duration took = absl::Now() - start;
    RANK_EXPECT(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s), s.ToString());
    RANK_EXPECT(took < timeout + absl::Seconds(1), absl::FormatDuration(took));
    RANK_EXPECT(absl::StrContains(s.message(), "AllReduce") &&
                    absl::StrContains(s.message(), "group 'world'"),
                s.ToString());
    // The peer is named by rank, or by address when this rank accepted the connection.
    RANK_EXPECT(absl::StrContains(s.message(), "peer"), s.ToString());
    RANK_EXPECT(!comm->health().ok());
    absl::Status next = comm->Barrier();
    RANK_EXPECT(absl::IsFailedPrecondition(next), next.ToString());
    return absl::OkStatus();
  });
  ASSERT_TRUE(results[0].ok() && results[1].ok()) << Describe(results);
}

TEST(Communicator, RankThatHangsMidCollectiveTimesTheOthersOut) {
  const absl::Duration timeout = absl::Seconds(2);
  auto results = RunRanks(3, [timeout](int rank, int world, const std::string& dir) {
    ASSIGN_OR_RETURN(auto comm, ConnectRank(rank, world, dir, timeout));
    ASSIGN_OR_RETURN(auto flags, FileKvStore::Open(dir + "/flags"));
    RETURN_IF_ERROR(comm->Barrier());
    if (rank == 2) {  // alive but never joins: waits until the others are done
      return flags->Wait({"done0", "done1"}, absl::Seconds(15));
    }
    ASSIGN_OR_RETURN(Tensor in, Input(rank, {6, 2}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor out, Tensor::Zeros({6, 2}, DType::kF32));
    std::vector<int64_t> splits(3, 2);
    const absl::Time start = absl::Now();
    absl::Status s = comm->AllToAllV(in, splits, out, splits);
    const absl::Duration took = absl::Now() - start;
    RETURN_IF_ERROR(flags->Set(absl::StrCat("done", rank), "1"));
    RANK_EXPECT(absl::IsDeadlineExceeded(s) || absl::IsUnavailable(s), s.ToString());
    RANK_EXPECT(took < timeout + absl::Seconds(1), absl::FormatDuration(took));
    RANK_EXPECT(absl::StrContains(s.message(), "AllToAllV") &&
                    absl::StrContains(s.message(), "peer rank"),
                s.ToString());
    return absl::OkStatus();
  });
  for (const RankResult& r : results) ASSERT_TRUE(r.ok()) << Describe(results);
}

TEST(Communicator, MissingRankFailsTheRendezvousWithinTheTimeout) {
  auto results = RunRanks(2, [](int rank, int world, const std::string& dir) {
    if (rank == 1) return absl::OkStatus();  // never shows up
    const absl::Time start = absl::Now();
    auto comm = ConnectRank(rank, world, dir, absl::Seconds(1));
    RANK_EXPECT(!comm.ok(), "connected without rank 1");
    RANK_EXPECT(absl::IsDeadlineExceeded(comm.status()), comm.status().ToString());
    RANK_EXPECT(absl::Now() - start < absl::Seconds(3));
    RANK_EXPECT(absl::StrContains(comm.status().message(), "world"),
                comm.status().ToString());
    return absl::OkStatus();
  });
  ExpectAllOk(results);
}

}  // namespace
}  // namespace tessera
