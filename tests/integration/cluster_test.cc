// Cluster protocol tests with real worker processes on 127.0.0.1: registration checks, the
// rendezvous store, ClusterExecutor against the in-process StepRunner, a killed worker failing
// the step and rejoining, and the heartbeat timeout.
#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "coordinator/cluster/cluster_service.h"
#include "coordinator/cluster/rendezvous_service.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"
#include "worker/make_model.h"
#include "worker/models/model.h"
#include "worker/step_runner.h"
#include "worker/version.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::ChildProcess;

const std::string& TinyModel() { return testing::TinyModelDir("qwen3_moe"); }

// Greedy generation of `max_tokens` tokens per prompt, all prompts batched, through `executor`.
std::vector<std::vector<int32_t>> Drive(StepExecutor& executor,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        int max_tokens, uint64_t first_step = 0) {
  const int bs = executor.capacity().block_size;
  const size_t n = prompts.size();
  std::vector<std::vector<int32_t>> out(n);
  std::vector<int64_t> blocks(n, 0);
  int next_block = 0;
  for (uint64_t step = first_step; step < first_step + 200; ++step) {
    v1::StepPlan plan;
    plan.set_step_id(step);
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<int>(out[i].size()) >= max_tokens) continue;
      any = true;
      const int64_t len = static_cast<int64_t>(prompts[i].size() + out[i].size());
      const int64_t need = (len + bs - 1) / bs;
      if (out[i].empty()) {
        v1::NewSeq* s = plan.add_new_seqs();
        s->set_seq_id(i + 1000 * first_step);
        for (int32_t t : prompts[i]) s->add_token_ids(t);
        s->set_num_scheduled_tokens(static_cast<int32_t>(prompts[i].size()));
        for (; blocks[i] < need; ++blocks[i]) s->add_block_ids(next_block++);
        s->mutable_sampling()->set_top_p(1);
        s->mutable_sampling()->set_repetition_penalty(1);
        s->mutable_sampling()->set_seed(1);
      } else {
        v1::CachedSeq* s = plan.add_cached_seqs();
        s->set_seq_id(i + 1000 * first_step);
        s->add_append_token_ids(out[i].back());
        s->set_num_scheduled_tokens(1);
        for (; blocks[i] < need; ++blocks[i]) s->add_new_block_ids(next_block++);
      }
    }
    if (!any) break;
    absl::StatusOr<v1::StepResult> r = executor.Execute(plan);
    CHECK(r.ok()) << r.status();
    for (const v1::SampledToken& t : r->sampled()) {
      out[t.seq_id() - 1000 * first_step].push_back(t.token_id());
    }
  }
  return out;
}

class ClusterTest : public ::testing::Test {
 protected:
  void StartServer(ClusterOptions options) {
    cluster_ = std::make_unique<ClusterService>(std::move(options));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(cluster_.get());
    builder.RegisterService(&rendezvous_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (cluster_ != nullptr) cluster_->Shutdown("test over");
    workers_.clear();
    rendezvous_.Shutdown();
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
  }
  std::string Address() const { return absl::StrCat("127.0.0.1:", port_); }
  ChildProcess* StartWorker(std::vector<std::string> extra) {
    std::vector<std::string> args = {testing::TesseraBinary(), "worker", "--coordinator",
                                     Address(), "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string log = testing::MakeTempDir("cluster_worker") + "/worker.log";
    workers_.push_back(std::make_unique<ChildProcess>(args, log));
    return workers_.back().get();
  }
  ClusterExecutor* AddInstance(int64_t kv_bytes = 8 << 20) {
    InstanceSpec spec;
    spec.instance_id = "tiny-0";
    spec.model_dir = TinyModel();
    spec.kv_cache_bytes = kv_bytes;
    spec.block_size = 4;
    return cluster_->AddInstance(spec);
  }

  std::unique_ptr<ClusterService> cluster_;
  RendezvousService rendezvous_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

TEST_F(ClusterTest, WorkerWithWrongJoinTokenIsRefusedAndExits) {
  ClusterOptions o;
  o.join_token = "s3cret";
  StartServer(o);
  ChildProcess* w = StartWorker({"--join-token", "wrong"});
  std::optional<int> code = w->Wait(milliseconds(20000));
  ASSERT_TRUE(code.has_value()) << "worker still running; log:\n" << w->Log();
  EXPECT_NE(*code, 0);
  EXPECT_THAT(w->Log(), HasSubstr("join token rejected"));
  EXPECT_TRUE(cluster_->Workers().empty());
}

TEST_F(ClusterTest, OtherProtocolVersionIsRefused) {
  StartServer({});
  auto stub = v1::Cluster::NewStub(
      grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto stream = stub->Connect(&ctx);
  v1::WorkerMessage hello;
  hello.mutable_registration()->set_protocol_version(kProtocolVersion + 100);
  ASSERT_TRUE(stream->Write(hello));
  v1::CoordinatorMessage reply;
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("protocol version"));
}

TEST_F(ClusterTest, RendezvousSetGetAddWaitAndTimeout) {
  StartServer({});
  auto stub = v1::Rendezvous::NewStub(
      grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  auto set = [&](const std::string& scope, const std::string& key, const std::string& value) {
    grpc::ClientContext ctx;
    v1::RendezvousSetRequest req;
    req.set_scope(scope);
    req.set_key(key);
    req.set_value(value);
    v1::RendezvousSetResponse resp;
    return stub->Set(&ctx, req, &resp);
  };
  auto get = [&](const std::string& scope, const std::string& key, int64_t timeout_ms,
                 std::string* value) {
    grpc::ClientContext ctx;
    v1::RendezvousGetRequest req;
    req.set_scope(scope);
    req.set_key(key);
    req.set_timeout_ms(timeout_ms);
    v1::RendezvousGetResponse resp;
    grpc::Status st = stub->Get(&ctx, req, &resp);
    *value = resp.value();
    return st;
  };
  ASSERT_TRUE(set("inst/1", "rank0", std::string("\0\1bytes", 7)).ok());
  std::string value;
  ASSERT_TRUE(get("inst/1", "rank0", 0, &value).ok());
  EXPECT_EQ(value, std::string("\0\1bytes", 7));

  // Scopes are isolated; a missing key times out with DEADLINE_EXCEEDED naming it.
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status st = get("inst/2", "rank0", 300, &value);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(st.error_message(), HasSubstr("rank0"));
  EXPECT_GE(waited, milliseconds(290));
  EXPECT_LT(waited, milliseconds(3000));

  // A blocked Get returns when another client sets the key.
  std::thread later([&] {
    std::this_thread::sleep_for(milliseconds(200));
    EXPECT_TRUE(set("inst/1", "late", "x").ok());
  });
  ASSERT_TRUE(get("inst/1", "late", 5000, &value).ok());
  EXPECT_EQ(value, "x");
  later.join();

  for (int expect : {3, 5}) {
    grpc::ClientContext ctx;
    v1::RendezvousAddRequest req;
    req.set_scope("inst/1");
    req.set_key("counter");
    req.set_delta(expect == 3 ? 3 : 2);
    v1::RendezvousAddResponse resp;
    ASSERT_TRUE(stub->Add(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.value(), expect);
  }
  ASSERT_TRUE(get("inst/1", "counter", 0, &value).ok());
  EXPECT_EQ(value, "5");

  {
    grpc::ClientContext ctx;
    v1::RendezvousKeysRequest req;
    req.set_scope("inst/1");
    req.add_keys("rank0");
    req.add_keys("rank1");
    req.set_timeout_ms(100);
    v1::RendezvousWaitResponse resp;
    grpc::Status w = stub->Wait(&ctx, req, &resp);
    EXPECT_EQ(w.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_THAT(w.error_message(), HasSubstr("rank1"));
    EXPECT_THAT(w.error_message(), ::testing::Not(HasSubstr("rank0,")));
  }
  {
    grpc::ClientContext ctx;
    v1::RendezvousDeleteRequest req;
    req.set_scope("inst/1");
    req.set_prefix("rank");
    v1::RendezvousDeleteResponse resp;
    ASSERT_TRUE(stub->Delete(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.num_deleted(), 1);
  }
  {
    grpc::ClientContext ctx;
    v1::RendezvousKeysRequest req;
    req.set_scope("inst/1");
    req.add_keys("late");
    req.add_keys("counter");
    v1::RendezvousCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.ready());
    req.add_keys("rank0");
    grpc::ClientContext ctx2;
    ASSERT_TRUE(stub->Check(&ctx2, req, &resp).ok());
    EXPECT_FALSE(resp.ready());
  }
}

TEST_F(ClusterTest, ExecutorOverWorkerMatchesInProcessRunner) {
  StartServer({});
  ClusterExecutor* executor = AddInstance();
  ChildProcess* w = StartWorker({"--worker-id", "w0"});
  ASSERT_TRUE(cluster_->WaitAllReady(milliseconds(60000))) << w->Log();
  EXPECT_GT(executor->capacity().num_blocks, 0);
  EXPECT_EQ(executor->capacity().block_size, 4);

  auto loaded = LoadModelFromDirectory(TinyModel());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  StepRunnerOptions ro;
  ro.block_size = 4;
  ro.num_blocks = executor->capacity().num_blocks;
  auto local = StepRunner::Create(std::move(*loaded), ro);
  ASSERT_TRUE(local.ok()) << local.status();

  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {7, 9}, {11, 3, 5, 8, 2, 6, 4}};
  auto remote_out = Drive(*executor, prompts, 6);
  auto local_out = Drive(**local, prompts, 6);
  EXPECT_EQ(remote_out, local_out);
  for (const auto& o : remote_out) EXPECT_EQ(o.size(), 6u);
  auto workers = cluster_->Workers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].worker_id, "w0");
  EXPECT_EQ(workers[0].state, "ready");
  EXPECT_EQ(workers[0].registration.device().kind(), "cpu");
  EXPECT_GT(workers[0].registration.device().memory_total_bytes(), 0);
}

TEST_F(ClusterTest, KilledWorkerFailsStepsUntilARestartedWorkerRejoins) {
  StartServer({});
  ClusterExecutor* executor = AddInstance();
  ChildProcess* w = StartWorker({"--worker-id", "w0"});
  ASSERT_TRUE(cluster_->WaitAllReady(milliseconds(60000))) << w->Log();
  auto before = Drive(*executor, {{1, 2, 3}}, 3);

  w->Kill(SIGKILL);
  ASSERT_TRUE(w->Wait(milliseconds(5000)).has_value());
  ASSERT_TRUE(testing::WaitFor([&] { return !executor->ready(); }, milliseconds(5000)));
  v1::StepPlan plan;
  plan.set_step_id(99);
  absl::StatusOr<v1::StepResult> r = executor->Execute(plan);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("tiny-0"));

  ChildProcess* again = StartWorker({"--worker-id", "w0"});
  ASSERT_TRUE(cluster_->WaitAllReady(milliseconds(60000))) << again->Log();
  EXPECT_EQ(Drive(*executor, {{1, 2, 3}}, 3, /*first_step=*/100), before);
}

TEST_F(ClusterTest, SilentWorkerIsMarkedDownAfterHeartbeatTimeoutThenRejoins) {
  ClusterOptions o;
  o.heartbeat_interval = milliseconds(200);
  o.heartbeat_timeout = milliseconds(1000);
  StartServer(o);
  ClusterExecutor* executor = AddInstance();
  ChildProcess* w = StartWorker({"--worker-id", "w0"});
  ASSERT_TRUE(cluster_->WaitAllReady(milliseconds(60000))) << w->Log();
  w->Kill(SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(testing::WaitFor([&] { return !executor->ready(); }, milliseconds(5000)));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, milliseconds(700));
  w->Kill(SIGCONT);
  // The worker notices its stream was cancelled, reconnects with the same id and reloads.
  ASSERT_TRUE(cluster_->WaitAllReady(milliseconds(60000))) << w->Log();
  EXPECT_THAT(w->Log(), HasSubstr("reconnecting"));
}

}  // namespace
}  // namespace tessera
