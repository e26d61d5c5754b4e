// FileKvStore / PrefixKvStore semantics, and GlooCommunicator argument checks on a one-rank group.
#include "parallel/kv_store.h"

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/base/status.h"
#include "parallel/gloo_communicator.h"
#include "tests/parallel/multi_process.h"

namespace tessera {
namespace {

using testing::Describe;
using testing::MakeTempDir;
using testing::RunRanks;

TEST(FileKvStore, SetThenGetReturnsTheBytes) {
  auto store = FileKvStore::Open(MakeTempDir("kv_set"));
  ASSERT_TRUE(store.ok()) << store.status();
  std::string value("a\0b/c", 5);
  ASSERT_TRUE((*store)->Set("group/0", value).ok());
  absl::StatusOr<std::string> got = (*store)->Get("group/0", absl::Seconds(1));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, value);
}

TEST(FileKvStore, GetOfAMissingKeyTimesOutNamingIt) {
  auto store = FileKvStore::Open(MakeTempDir("kv_missing"));
  ASSERT_TRUE(store.ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> got = (*store)->Get("world/3", absl::Milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(got.status())) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), "world/3")) << got.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(FileKvStore, KeysThatDifferOnlyInEscapedCharactersStayDistinct) {
  auto store = FileKvStore::Open(MakeTempDir("kv_escape"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Set("a/b", "1").ok());
  ASSERT_TRUE((*store)->Set("a%2Fb", "2").ok());
  ASSERT_TRUE((*store)->Set(".hidden", "3").ok());
  EXPECT_EQ(*(*store)->Get("a/b", absl::Seconds(1)), "1");
  EXPECT_EQ(*(*store)->Get("a%2Fb", absl::Seconds(1)), "2");
  EXPECT_EQ(*(*store)->Get(".hidden", absl::Seconds(1)), "3");
  EXPECT_FALSE(*(*store)->Check({"a/b", "missing"}));
}

TEST(FileKvStore, AddIsAtomicAcrossProcesses) {
  const std::string dir = MakeTempDir("kv_add");
  auto results = RunRanks(4, [&dir](int, int, const std::string&) -> absl::Status {
    ASSIGN_OR_RETURN(auto store, FileKvStore::Open(dir));
    for (int i = 0; i < 50; ++i) RETURN_IF_ERROR(store->Add("counter", 1).status());
    return absl::OkStatus();
  });
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << Describe(results);
  auto store = FileKvStore::Open(dir);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<int64_t> v = (*store)->Add("counter", 0);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 200);
  EXPECT_EQ(*(*store)->Get("counter", absl::Seconds(1)), "200");
}

TEST(PrefixKvStore, NamespacesDoNotSeeEachOther) {
  auto base = FileKvStore::Open(MakeTempDir("kv_prefix"));
  ASSERT_TRUE(base.ok());
  std::shared_ptr<KvStore> shared(std::move(*base));
  PrefixKvStore a(shared, "gen1"), b(shared, "gen2");
  ASSERT_TRUE(a.Set("0", "x").ok());
  EXPECT_TRUE(*a.Check({"0"}));
  EXPECT_FALSE(*b.Check({"0"}));
  EXPECT_EQ(*shared->Get("gen1/0", absl::Seconds(1)), "x");
}

// One-rank groups need no peers: argument checks run in-process.
std::unique_ptr<GlooCommunicator> SoloComm(const std::string& name) {
  auto store = FileKvStore::Open(MakeTempDir(name));
  CHECK(store.ok());
  GlooCommOptions options;
  options.store = std::shared_ptr<KvStore>(std::move(*store));
  auto comm = GlooCommunicator::Create(options);
  CHECK(comm.ok()) << comm.status();
  return std::move(*comm);
}

TEST(GlooCommunicatorArgs, SingleRankCollectivesAreLocal) {
  auto comm = SoloComm("solo_local");
  Tensor in = Tensor::FromVector(absl::Span<const float>({1, 2, 3, 4}), {2, 2});
  auto out = Tensor::Zeros({2, 2}, DType::kF32);
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(comm->AllReduce(in, ReduceOp::kSum).ok());
  ASSERT_TRUE(comm->AllGather(in, *out).ok());
  EXPECT_EQ(out->data<float>()[3], 4);
  ASSERT_TRUE(comm->AllToAllVAsync(in, {2}, *out, {2})->Wait().ok());
  ASSERT_TRUE(comm->Barrier().ok());
  EXPECT_EQ(comm->backend(), "gloo");
}

TEST(GlooCommunicatorArgs, AllToAllVSplitsThatDoNotAddUpAreInvalid) {
  auto comm = SoloComm("solo_splits");
  auto in = Tensor::Zeros({3, 2}, DType::kF32);
  auto out = Tensor::Zeros({3, 2}, DType::kF32);
  absl::Status s = comm->AllToAllV(*in, {2}, *out, {3});
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "in_splits")) << s;
  EXPECT_TRUE(comm->health().ok());  // argument errors do not break the group
}

TEST(GlooCommunicatorArgs, ReducingFp8IsInvalid) {
  auto comm = SoloComm("solo_fp8");
  auto t = Tensor::Zeros({4}, DType::kF8E4M3);
  absl::Status s = comm->AllReduceAsync(*t, ReduceOp::kSum)->Wait();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "f8")) << s;
}

TEST(GlooCommunicatorArgs, NonContiguousTensorsAreInvalid) {
  auto comm = SoloComm("solo_strided");
  auto t = Tensor::Zeros({4, 4}, DType::kF32);
  absl::Status s = comm->Broadcast(t->Slice(1, 0, 2), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "contiguous")) << s;
}

TEST(GlooCommunicatorArgs, NewGroupWithoutThisRankIsInvalid) {
  auto comm = SoloComm("solo_group");
  auto g = comm->NewGroup({1}, "");
  EXPECT_TRUE(absl::IsInvalidArgument(g.status())) << g.status();
}

}  // namespace
}  // namespace tessera
