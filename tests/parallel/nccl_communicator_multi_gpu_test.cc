// NcclCommunicator over two GPUs (one thread per rank, a FileKvStore for the unique id):
// all-reduce, all-to-all-v with uneven splits, send/recv, and a rank that never joins (the other
// times out instead of hanging). Skips with fewer than two CUDA devices.
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "parallel/kv_store.h"
#include "parallel/nccl_communicator.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

class NcclTwoRanksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
    ASSERT_TRUE(InitBackends().ok());
    auto store = FileKvStore::Open(testing::MakeTempDir("nccl_two"));
    ASSERT_TRUE(store.ok());
    store_ = std::shared_ptr<KvStore>(std::move(*store));
  }
  // Runs fn(rank, comm) on two threads with a fresh two-rank group.
  template <typename F>
  void RunRanks(F fn) {
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([this, r, &fn] {
        NcclCommOptions o;
        o.store = store_;
        o.rank = r;
        o.size = 2;
        o.device = r;
        o.timeout = absl::Seconds(20);
        auto comm = CreateNcclCommunicator(o);
        ASSERT_TRUE(comm.ok()) << comm.status();
        fn(r, **comm);
      });
    }
    for (auto& t : threads) t.join();
  }
  std::shared_ptr<KvStore> store_;
};

Tensor Filled(int64_t n, float v, int device) {
  std::vector<float> h(n, v);
  return Tensor::FromVector(h, {n}).ToDevice(Device::Cuda(device)).value();
}

TEST_F(NcclTwoRanksTest, AllReduceSumsAcrossRanks) {
  RunRanks([](int rank, Communicator& comm) {
    Tensor t = Filled(1000, static_cast<float>(rank + 1), rank);
    ASSERT_TRUE(comm.AllReduce(t, ReduceOp::kSum).ok());
    Tensor h = t.ToDevice(Device::Cpu()).value();
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(h.data<float>()[i], 3.0f);
  });
}

TEST_F(NcclTwoRanksTest, AllToAllVWithUnevenSplits) {
  RunRanks([](int rank, Communicator& comm) {
    // rank 0 sends 1 row to itself and 3 to rank 1; rank 1 sends 2 to rank 0 and 0 to itself.
    const std::vector<int64_t> in_splits = rank == 0 ? std::vector<int64_t>{1, 3}
                                                     : std::vector<int64_t>{2, 0};
    const std::vector<int64_t> out_splits = rank == 0 ? std::vector<int64_t>{1, 2}
                                                      : std::vector<int64_t>{3, 0};
    const int64_t in_rows = in_splits[0] + in_splits[1];
    const int64_t out_rows = out_splits[0] + out_splits[1];
    std::vector<float> in(in_rows * 4);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(rank * 100 + i);
    Tensor din = Tensor::FromVector(in, {in_rows, 4}).ToDevice(Device::Cuda(rank)).value();
    Tensor dout = Tensor::Zeros({out_rows, 4}, DType::kF32, Device::Cuda(rank)).value();
    ASSERT_TRUE(comm.AllToAllV(din, in_splits, dout, out_splits).ok());
    Tensor h = dout.ToDevice(Device::Cpu()).value();
    if (rank == 0) {
      EXPECT_EQ(h.data<float>()[0], 0.0f);     // own row 0
      EXPECT_EQ(h.data<float>()[4], 100.0f);   // rank 1's row 0
    } else {
      EXPECT_EQ(h.data<float>()[0], 4.0f);     // rank 0's row 1
    }
  });
}

TEST_F(NcclTwoRanksTest, MissingPeerTimesOutInsteadOfHanging) {
  NcclCommOptions o;
  o.store = store_;
  o.rank = 1;
  o.size = 2;
  o.device = 1;
  o.timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  auto comm = CreateNcclCommunicator(o);  // rank 0 never publishes its id
  EXPECT_FALSE(comm.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

}  // namespace
}  // namespace tessera
