// `tessera serve --dp N`: data-parallel attention inside one model instance. Each DP rank has its
// own engine (requests, scheduler, KV cache) and its own workers' attention; the MoE layers'
// experts are partitioned over every rank of the instance and tokens travel by all-to-all-v.
// Concurrent greedy Generate streams spread over the DP ranks must give exactly the tokens of
// `tessera generate` on one rank, and both DP ranks must have run plans (the coordinator logs the
// per-rank plan counts when it stops).
#include <chrono>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/generation.grpc.pb.h"
#include "tests/integration/generation_util.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::GreedyStream;

std::string ModelDir() { return testing::TinyModelDir("qwen2_moe"); }


// Layout flags and the number of local workers (one instance).
struct Layout {
  std::string flags;
  int workers;
};

class ServeDpAttentionTest : public ::testing::TestWithParam<Layout> {};

TEST_P(ServeDpAttentionTest, DataParallelRanksServeTheirOwnRequestsLikeOneRank) {
  const int port = testing::FreePort();
  const std::string log = testing::MakeTempDir("serve_dp") + "/serve.log";
  std::vector<std::string> args = {testing::TesseraBinary(), "serve", "--model", ModelDir(),
                                   "--grpc-port", absl::StrCat(port), "--http-port", "0",
                                   "--local-workers", absl::StrCat(GetParam().workers),
                                   "--worker-threads", "1", "--kv-cache-memory", "16MiB",
                                   "--block-size", "8"};
  for (absl::string_view a : absl::StrSplit(GetParam().flags, ' ')) args.emplace_back(a);
  ChildProcess server(args, log);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  ASSERT_TRUE(testing::WaitFor([&] { return GreedyStream(channel, {1}, 1).status.ok(); },
                               milliseconds(90000)))
      << server.Log();
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 2, 3, 4, 5}, {9, 8, 7}, {100, 200, 300, 400, 500, 511, 7, 8, 9}, {42},
      {5, 4, 3, 2, 1, 0}, {77, 66}};
  testing::ExpectConcurrentStreamsMatchReference(channel, ModelDir(), prompts, 10,
                                                 [&] { return server.Log(); });
  server.Kill(SIGTERM);
  ASSERT_TRUE(server.Wait(milliseconds(15000)).has_value());
  // "... N steps carried M plans (per DP rank: a, b)": both DP ranks ran requests.
  std::smatch m;
  const std::string text = server.Log();
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(per DP rank: (\d+), (\d+)\))"))) << text;
  EXPECT_GT(std::stoi(m[1]), 0) << text;
  EXPECT_GT(std::stoi(m[2]), 0) << text;
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeDpAttentionTest,
                         ::testing::Values(Layout{"--dp 2", 2}, Layout{"--dp 2 --tp 2", 4},
                                           Layout{"--dp 2 --pp 2", 4}));

}  // namespace
}  // namespace tessera
