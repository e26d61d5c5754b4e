// `tessera serve` end to end with real processes on 127.0.0.1: a coordinator with two local
// workers (two data-parallel instances) serving 64 concurrent streaming Generate calls whose
// greedy outputs equal `tessera generate` on each prompt alone; health and reflection; request
// validation; and a worker killed with SIGKILL mid-stream (its requests end UNAVAILABLE, the
// model turns NOT_SERVING, the supervisor restarts the worker and serving resumes).
#include <dirent.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/generation.grpc.pb.h"
#include "tests/integration/generation_util.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"
#include "worker/make_model.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::ChildProcess;

std::string ModelDir() { return testing::TinyModelDir("qwen3_moe"); }

std::string Slurp(const grpc::ByteBuffer& bb) {
  std::vector<grpc::Slice> slices;
  (void)bb.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// Children of `pid` (from /proc/*/stat).
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const pid_t child = atoi(e->d_name);
    if (child <= 0) continue;
    std::ifstream in(absl::StrCat("/proc/", child, "/stat"));
    std::string stat;
    std::getline(in, stat);
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    char state;
    int ppid = 0;
    if (sscanf(stat.c_str() + paren + 1, " %c %d", &state, &ppid) == 2 && ppid == pid &&
        state != 'Z') {
      out.push_back(child);
    }
  }
  closedir(d);
  return out;
}

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    port_ = testing::FreePort();
    const std::string log = testing::MakeTempDir("serve_test") + "/serve.log";
    server_ = new ChildProcess(
        {testing::TesseraBinary(), "serve", "--model", ModelDir(), "--grpc-port",
         absl::StrCat(port_), "--http-port", "0", "--local-workers", "2", "--worker-threads", "1",
         "--kv-cache-memory", "32MiB", "--block-size", "8", "--max-num-seqs", "64",
         "--heartbeat-timeout", "3"},
        log);
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
    CHECK(testing::WaitFor([] { return Health("tiny-qwen3-moe") == 1; }, milliseconds(60000)))
        << server_->Log();
  }
  static void TearDownTestSuite() {
    server_->Kill(SIGTERM);
    std::optional<int> code = server_->Wait(milliseconds(15000));
    EXPECT_TRUE(code.has_value()) << "serve did not exit on SIGTERM";
    if (code.has_value()) EXPECT_EQ(*code, 0) << server_->Log();
    delete server_;
    delete channel_;
  }

  // grpc.health.v1.Health/Check: 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN, -1 RPC error.
  static int Health(const std::string& service) {
    grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer> stub(*channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
    std::string req;
    if (!service.empty()) req = absl::StrCat("\x0a", std::string(1, static_cast<char>(service.size())), service);
    grpc::ByteBuffer request = Buffer(req), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                   [&](grpc::Status st) { done.set_value(st); });
    grpc::Status st = done.get_future().get();
    if (!st.ok()) return st.error_code() == grpc::StatusCode::NOT_FOUND ? 3 : -1;
    const std::string bytes = Slurp(response);
    return bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  }

  struct Stream {
    std::vector<int32_t> tokens;
    grpc::Status status;
    v1::GenerateResponse last;
    int messages = 0;
  };

  static v1::GenerateRequest Greedy(const std::vector<int32_t>& prompt, int max_tokens) {
    v1::GenerateRequest req;
    req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    req.mutable_sampling()->set_temperature(0);
    req.mutable_sampling()->set_max_tokens(max_tokens);
    return req;
  }

  static Stream Generate(const v1::GenerateRequest& req,
                         std::function<void(const v1::GenerateResponse&)> on_message = nullptr) {
    auto stub = v1::Generation::NewStub(*channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(60000));
    auto reader = stub->Generate(&ctx, req);
    Stream s;
    v1::GenerateResponse r;
    while (reader->Read(&r)) {
      s.tokens.insert(s.tokens.end(), r.token_ids().begin(), r.token_ids().end());
      ++s.messages;
      if (on_message) on_message(r);
      s.last = r;
    }
    s.status = reader->Finish();
    return s;
  }

  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int max_tokens) {
    return testing::GreedyReference(ModelDir(), prompt, max_tokens);
  }

  static inline ChildProcess* server_ = nullptr;
  static inline std::shared_ptr<grpc::Channel>* channel_ = nullptr;
  static inline int port_ = 0;
};

TEST_F(ServeTest, HealthReportsServingForServerAndModel) {
  EXPECT_EQ(Health(""), 1);
  EXPECT_EQ(Health("tiny-qwen3-moe"), 1);
  EXPECT_EQ(Health("no-such-model"), 3);
}

TEST_F(ServeTest, ReflectionListsTheServices) {
  grpc::TemplatedGenericStub<grpc::ByteBuffer, grpc::ByteBuffer> stub(*channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(5000));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                               &cq);
  void* tag;
  bool ok;
  auto step = [&](intptr_t want) {
    CHECK(cq.Next(&tag, &ok));
    CHECK_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  // ServerReflectionRequest { list_services = 7: "" }
  call->Write(Buffer(std::string("\x3a\x00", 2)), reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status st;
  call->Finish(&st, reinterpret_cast<void*>(5));
  step(5);
  const std::string bytes = Slurp(response);
  EXPECT_THAT(bytes, HasSubstr("tessera.v1.Generation"));
  EXPECT_THAT(bytes, HasSubstr("tessera.v1.Cluster"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
}

TEST_F(ServeTest, BadRequestsAreInvalidArgumentNamingTheField) {
  struct Case {
    v1::GenerateRequest req;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({v1::GenerateRequest(), "prompt"});
  {
    v1::GenerateRequest r = Greedy({1, 2}, 4);
    r.mutable_sampling()->set_max_tokens(-1);
    cases.push_back({r, "max_tokens"});
  }
  {
    v1::GenerateRequest r = Greedy({1, 2}, 4);
    r.set_model("gpt-17");
    cases.push_back({r, "model"});
  }
  {
    std::vector<int32_t> huge(40960, 5);
    cases.push_back({Greedy(huge, 4), "prompt_token_ids"});
  }
  cases.push_back({Greedy({1, 100000}, 4), "prompt_token_ids[1]"});
  {
    v1::GenerateRequest r = Greedy({1, 2}, 4);
    r.mutable_sampling()->set_temperature(-1);
    cases.push_back({r, "temperature"});
  }
  for (const Case& c : cases) {
    Stream s = Generate(c.req);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_THAT(s.status.error_message(), HasSubstr(c.field));
    EXPECT_TRUE(s.tokens.empty());
  }
}

TEST_F(ServeTest, ConcurrentGreedyStreamsMatchGenerateAlone) {
  // 16 distinct prompts of mixed lengths, each requested 4 times: 64 concurrent streams.
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
  for (int i = 0; i < 16; ++i) {
    std::vector<int32_t> p(3 + (i * 7) % 37);
    for (int32_t& t : p) t = static_cast<int32_t>(rng() % 512);
    prompts.push_back(p);
    max_tokens.push_back(4 + (i * 5) % 29);
  }
  std::vector<std::future<Stream>> streams;
  for (int r = 0; r < 4; ++r) {
    for (int i = 0; i < 16; ++i) {
      streams.push_back(std::async(std::launch::async, [&, i] {
        return Generate(Greedy(prompts[i], max_tokens[i]));
      }));
    }
  }
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 16; ++i) expected.push_back(Reference(prompts[i], max_tokens[i]));
  for (int k = 0; k < 64; ++k) {
    Stream s = streams[k].get();
    const int i = k % 16;
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens, expected[i]) << "prompt " << i;
    EXPECT_NE(s.last.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_EQ(s.last.usage().prompt_tokens(), static_cast<int64_t>(prompts[i].size()));
    EXPECT_EQ(s.last.usage().completion_tokens(), static_cast<int64_t>(s.tokens.size()));
  }
}

TEST_F(ServeTest, CancelledStreamEndsCancelledAndServingContinues) {
  auto stub = v1::Generation::NewStub(*channel_);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, Greedy({9, 8, 7}, 4000));
  v1::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r)) << reader->Finish().error_message();
  const auto t0 = std::chrono::steady_clock::now();
  ctx.TryCancel();
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(2000));
  // The aborted request no longer occupies the engine: a new one finishes at full length.
  Stream s = Generate(Greedy({4, 5, 6}, 8));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens.size(), 8u);
}

TEST_F(ServeTest, KilledWorkerEndsItsStreamsUnavailableAndIsRestarted) {
  const std::vector<pid_t> before = ChildrenOf(server_->pid());
  ASSERT_EQ(before.size(), 2u);
  constexpr int kStreams = 16;
  std::atomic<int> started{0};
  std::vector<std::future<std::pair<Stream, std::chrono::steady_clock::time_point>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::async(std::launch::async, [&, i] {
      bool counted = false;
      Stream s = Generate(Greedy({1, 2, 3, static_cast<int32_t>(i)}, 1000),
                          [&](const v1::GenerateResponse& r) {
                            if (!counted && r.token_ids_size() > 0) {
                              counted = true;
                              ++started;
                            }
                          });
      return std::make_pair(s, std::chrono::steady_clock::now());
    }));
  }
  ASSERT_TRUE(testing::WaitFor([&] { return started.load() == kStreams; }, milliseconds(30000)));
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(before[0], SIGKILL), 0);
  // The model is not fully ready until the supervisor's replacement rejoins.
  EXPECT_TRUE(testing::WaitFor([] { return Health("tiny-qwen3-moe") == 2; }, milliseconds(5000)));
  int unavailable = 0;
  for (auto& f : streams) {
    auto [s, ended] = f.get();
    if (s.status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      ++unavailable;
      EXPECT_LT(ended - killed_at, milliseconds(5000));
      EXPECT_FALSE(s.tokens.empty());
    } else {
      EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    }
  }
  EXPECT_GT(unavailable, 0);
  EXPECT_LT(unavailable, kStreams);  // the other instance kept serving
  ASSERT_TRUE(testing::WaitFor([] { return Health("tiny-qwen3-moe") == 1; }, milliseconds(60000)))
      << server_->Log();
  const std::vector<pid_t> after = ChildrenOf(server_->pid());
  EXPECT_EQ(after.size(), 2u);
  EXPECT_TRUE(std::find(after.begin(), after.end(), before[0]) == after.end());
  Stream s = Generate(Greedy({4, 5, 6}, 8));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.tokens, Reference({4, 5, 6}, 8));
}

}  // namespace
}  // namespace tessera
