// NcclCommunicator creation on machines where it cannot work (label cpu): a CPU-only build, or a
// CUDA build without a GPU, must fail at once with an error naming the group, never hang.
#include "parallel/nccl_communicator.h"

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "parallel/kv_store.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

TEST(NcclCommunicator, WithoutAGpuCreationFailsPromptlyAndClearly) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present (see the cuda test)";
  auto store = FileKvStore::Open(testing::MakeTempDir("nccl_nogpu"));
  ASSERT_TRUE(store.ok());
  NcclCommOptions options;
  options.store = std::shared_ptr<KvStore>(std::move(*store));
  options.name = "world/tp0";
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateNcclCommunicator(options);
  ASSERT_FALSE(comm.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_NE(comm.status().message().find("world/tp0"), absl::string_view::npos) << comm.status();
  if (BuiltWithCuda()) {
    EXPECT_NE(comm.status().message().find("cuda:0"), absl::string_view::npos) << comm.status();
  } else {
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnimplemented);
  }
}

TEST(NcclCommunicator, RankOutsideTheGroupIsInvalidArgument) {
  if (!BuiltWithCuda()) GTEST_SKIP() << "CPU-only build: creation is UNIMPLEMENTED";
  auto store = FileKvStore::Open(testing::MakeTempDir("nccl_badrank"));
  ASSERT_TRUE(store.ok());
  NcclCommOptions options;
  options.store = std::shared_ptr<KvStore>(std::move(*store));
  options.rank = 2;
  options.size = 2;
  absl::StatusOr<std::unique_ptr<Communicator>> comm = CreateNcclCommunicator(options);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
}

}  // namespace
}  // namespace tessera
