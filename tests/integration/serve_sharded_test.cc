// `tessera serve` with one model instance sharded over two local worker processes (tensor,
// expert and pipeline parallel layouts): the workers join the instance's Gloo group through the
// coordinator's Rendezvous service, load their shards, and concurrent greedy Generate streams give
// exactly the tokens of `tessera generate` on one rank.
#include <chrono>
#include <memory>
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
#include "worker/make_model.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::GreedyStream;

std::string ModelDir() { return testing::TinyModelDir("qwen3_moe"); }


class ServeShardedTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ServeShardedTest, ShardedInstanceMatchesOneRank) {
  const int port = testing::FreePort();
  const std::string log = testing::MakeTempDir("serve_sharded") + "/serve.log";
  std::vector<std::string> args = {testing::TesseraBinary(), "serve", "--model", ModelDir(),
                                   "--grpc-port", absl::StrCat(port), "--http-port", "0",
                                   "--local-workers", "2", "--worker-threads", "1",
                                   "--kv-cache-memory", "16MiB", "--block-size", "8"};
  for (absl::string_view a : absl::StrSplit(GetParam(), ' ')) args.emplace_back(a);
  ChildProcess server(args, log);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 2, 3, 4, 5}, {9, 8, 7}, {100, 200, 300, 400, 500, 511, 7, 8, 9}, {42}};
  // Wait until the sharded instance is loaded and serving.
  ASSERT_TRUE(testing::WaitFor([&] { return GreedyStream(channel, {1}, 1).status.ok(); },
                               milliseconds(90000)))
      << server.Log();
  testing::ExpectConcurrentStreamsMatchReference(channel, ModelDir(), prompts, 12,
                                                 [&] { return server.Log(); });
  server.Kill(SIGTERM);
  EXPECT_TRUE(server.Wait(milliseconds(15000)).has_value());
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeShardedTest,
                         ::testing::Values("--tp 2 --ep 1", "--tp 2 --ep 2", "--tp 1 --ep 2",
                                           "--pp 2"));

}  // namespace
}  // namespace tessera
