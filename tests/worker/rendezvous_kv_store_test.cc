// RendezvousKvStore against the coordinator's real RendezvousService on 127.0.0.1, and a Gloo
// group bootstrapped through it (ranks as threads of this process).
#include "worker/rendezvous_kv_store.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/cluster/rendezvous_service.h"
#include "gtest/gtest.h"
#include "parallel/gloo_communicator.h"
#include "tessera/v1/cluster.pb.h"

namespace tessera {
namespace {

class RendezvousKvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    service_.Shutdown();
    server_->Shutdown();
  }
  std::string Address() const { return absl::StrCat("127.0.0.1:", port_); }

  RendezvousService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(RendezvousKvStoreTest, SetGetAddCheckWithinAScope) {
  auto store = RendezvousKvStore::Connect(Address(), "inst/1");
  ASSERT_TRUE(store->Set("k", std::string("\0v", 2)).ok());
  absl::StatusOr<std::string> v = store->Get("k", absl::Seconds(1));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("\0v", 2));
  EXPECT_EQ(*store->Add("n", 2), 2);
  EXPECT_EQ(*store->Add("n", 3), 5);
  EXPECT_TRUE(*store->Check({"k", "n"}));
  auto other = RendezvousKvStore::Connect(Address(), "inst/2");
  EXPECT_FALSE(*other->Check({"k"}));
}

TEST_F(RendezvousKvStoreTest, MissingKeyTimesOutWithDeadlineExceededNamingTheScope) {
  auto store = RendezvousKvStore::Connect(Address(), "inst/1");
  const absl::Time start = absl::Now();
  absl::Status s = store->Wait({"rank3"}, absl::Milliseconds(200));
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "inst/1")) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(RendezvousKvStoreTest, UnreachableServiceFailsWithinTheRpcTimeout) {
  auto store = RendezvousKvStore::Connect("127.0.0.1:1", "inst/1", absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  absl::Status s = store->Set("k", "v");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "127.0.0.1:1")) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(RendezvousKvStoreTest, GlooGroupBootstrapsThroughTheService) {
  constexpr int kWorld = 3;
  std::vector<absl::Status> results(kWorld);
  std::vector<float> sums(kWorld, 0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.emplace_back([&, r] {
      GlooCommOptions options;
      options.store = RendezvousKvStore::Connect(Address(), "inst/7");
      options.rank = r;
      options.size = kWorld;
      options.timeout = absl::Seconds(10);
      auto comm = GlooCommunicator::Create(options);
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      Tensor t = Tensor::FromVector(absl::Span<const float>({static_cast<float>(r + 1)}), {1});
      results[r] = (*comm)->AllReduce(t, ReduceOp::kSum);
      sums[r] = t.data<float>()[0];
    });
  }
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
    EXPECT_EQ(sums[r], 6.0f) << "rank " << r;
  }
}

TEST_F(RendezvousKvStoreTest, InstanceGroupConnectsFromAssignments) {
  constexpr int kWorld = 2;
  auto channel = grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
  std::vector<absl::Status> results(kWorld);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.emplace_back([&, r] {
      v1::Assignment a;
      a.set_instance_id("inst");
      a.set_generation(3);
      a.set_rank(r);
      a.set_world_size(kWorld);
      a.set_rendezvous_namespace("inst/3");
      // Rank 0 dials the service itself, rank 1 reuses the coordinator channel.
      if (r == 0) a.set_rendezvous_address(Address());
      auto comm = ConnectInstanceGroup(a, channel, "127.0.0.1", absl::Seconds(10));
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      results[r] = (*comm)->Barrier();
    });
  }
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < kWorld; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << results[r];
}

TEST_F(RendezvousKvStoreTest, InstanceGroupNeedsARendezvousNamespace) {
  v1::Assignment a;
  a.set_world_size(2);
  auto comm = ConnectInstanceGroup(a, nullptr, "127.0.0.1");
  EXPECT_TRUE(absl::IsInvalidArgument(comm.status())) << comm.status();
}

}  // namespace
}  // namespace tessera
