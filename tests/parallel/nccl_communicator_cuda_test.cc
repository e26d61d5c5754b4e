// NcclCommunicator (parallel/nccl_communicator.h) with world size 1 on cuda:0: bootstrap through
// a FileKvStore, every collective's result, argument errors, and NewGroup. Skips without a GPU.
#include "parallel/nccl_communicator.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/base/tensor.h"
#include "parallel/kv_store.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RandomTensor;
using ::tessera::testing::RelativeError;
using ::tessera::testing::ToCuda;
using ::tessera::testing::ToHost;

class NcclWorldOneTest : public testing::CudaKernelTest {
 protected:
  void SetUp() override {
    testing::CudaKernelTest::SetUp();
    if (IsSkipped()) return;
    auto store = FileKvStore::Open(testing::MakeTempDir("nccl_store"));
    ASSERT_TRUE(store.ok()) << store.status();
    NcclCommOptions options;
    options.store = std::shared_ptr<KvStore>(std::move(*store));
    options.name = "world";
    absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateNcclCommunicator(options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = std::move(*comm);
  }
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclWorldOneTest, ReportsItsShape) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->backend(), "nccl");
  EXPECT_TRUE(comm_->health().ok());
}

TEST_F(NcclWorldOneTest, AllReduceOfOneRankIsTheIdentity) {
  const Tensor host = RandomTensor({33, 7}, 1);
  const Tensor dev = ToCuda(host);
  ASSERT_TRUE(comm_->AllReduce(dev, ReduceOp::kSum).ok());
  EXPECT_EQ(RelativeError(ToHost(dev), host), 0.0);
  const Tensor bf = ToCuda(host.To(DType::kBF16).value());
  ASSERT_TRUE(comm_->AllReduce(bf, ReduceOp::kMax).ok());
  EXPECT_EQ(RelativeError(ToHost(bf), host.To(DType::kBF16).value()), 0.0);
}

TEST_F(NcclWorldOneTest, GatherScatterAndBroadcastCopyTheRankBlock) {
  const Tensor host = RandomTensor({10, 4}, 2);
  const Tensor in = ToCuda(host);
  Tensor out = ToCuda(Tensor::Zeros({10, 4}, DType::kF32).value());
  ASSERT_TRUE(comm_->AllGather(in, out).ok());
  EXPECT_EQ(RelativeError(ToHost(out), host), 0.0);
  Tensor outv = ToCuda(Tensor::Zeros({10, 4}, DType::kF32).value());
  const int64_t splits[] = {10};
  ASSERT_TRUE(comm_->AllGatherV(in, outv, splits).ok());
  EXPECT_EQ(RelativeError(ToHost(outv), host), 0.0);
  Tensor rs = ToCuda(Tensor::Zeros({10, 4}, DType::kF32).value());
  ASSERT_TRUE(comm_->ReduceScatter(in, rs, ReduceOp::kSum).ok());
  EXPECT_EQ(RelativeError(ToHost(rs), host), 0.0);
  ASSERT_TRUE(comm_->Broadcast(in, 0).ok());
  EXPECT_EQ(RelativeError(ToHost(in), host), 0.0);
  ASSERT_TRUE(comm_->Barrier().ok());
}

TEST_F(NcclWorldOneTest, AllToAllVKeepsTheOwnBlock) {
  const Tensor host = RandomTensor({6, 16}, 3);
  Tensor out = ToCuda(Tensor::Zeros({6, 16}, DType::kF32).value());
  const int64_t splits[] = {6};
  ASSERT_TRUE(comm_->AllToAllV(ToCuda(host), splits, out, splits).ok());
  EXPECT_EQ(RelativeError(ToHost(out), host), 0.0);
}

TEST_F(NcclWorldOneTest, HostTensorIsInvalidArgument) {
  const absl::Status s = comm_->AllReduce(RandomTensor({4}, 4), ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(comm_->health().ok());
}

TEST_F(NcclWorldOneTest, NewGroupOfItselfWorks) {
  const int ranks[] = {0};
  absl::StatusOr<std::unique_ptr<Communicator>> g = comm_->NewGroup(ranks, "tp0");
  ASSERT_TRUE(g.ok()) << g.status();
  const Tensor host = RandomTensor({5}, 5);
  const Tensor dev = ToCuda(host);
  ASSERT_TRUE((*g)->AllReduce(dev, ReduceOp::kSum).ok());
  EXPECT_EQ(RelativeError(ToHost(dev), host), 0.0);
}

}  // namespace
}  // namespace tessera
