// Generation helpers shared by the integration tests: the batching-independent reference (greedy
// `tessera generate` on one prompt alone, in its own process) and one greedy streaming Generate
// call over gRPC.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "nlohmann/json.hpp"
#include "tessera/v1/generation.grpc.pb.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"

namespace tessera::testing {

// Greedy output ids of `tessera generate --model model` on `prompt` alone (one thread).
inline std::vector<int32_t> GreedyReference(const std::string& model,
                                            const std::vector<int32_t>& prompt, int max_tokens) {
  const std::string out = MakeTempDir("generate_ref") + "/out.json";
  ChildProcess gen({TesseraBinary(), "generate", "--model", model, "--prompt-ids",
                    absl::StrJoin(prompt, ","), "--max-tokens", absl::StrCat(max_tokens),
                    "--temperature", "0", "--threads", "1", "--json"},
                   out);
  std::optional<int> code = gen.Wait(std::chrono::milliseconds(60000));
  CHECK(code.has_value() && *code == 0) << gen.Log();
  const std::string text = gen.Log();
  const size_t brace = text.find('{');
  CHECK(brace != std::string::npos) << text;
  return nlohmann::json::parse(text.substr(brace))["output_ids"].get<std::vector<int32_t>>();
}

struct GreedyStreamResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
};

// One greedy Generate stream on `prompt` (60 s deadline): every token id it returned and the
// final status.
inline GreedyStreamResult GreedyStream(const std::shared_ptr<grpc::Channel>& channel,
                                       const std::vector<int32_t>& prompt, int max_tokens) {
  auto stub = v1::Generation::NewStub(channel);
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(60000));
  auto reader = stub->Generate(&ctx, req);
  GreedyStreamResult r;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    r.tokens.insert(r.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
  }
  r.status = reader->Finish();
  return r;
}

// Streams every prompt concurrently (greedy, max_tokens each) and expects each stream to end OK
// with exactly GreedyReference's tokens; `log` (the server's log) is printed on a failure.
inline void ExpectConcurrentStreamsMatchReference(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& model,
    const std::vector<std::vector<int32_t>>& prompts, int max_tokens,
    const std::function<std::string()>& log) {
  std::vector<std::future<GreedyStreamResult>> streams;
  for (const auto& p : prompts) {
    streams.push_back(std::async(std::launch::async,
                                 [&, p] { return GreedyStream(channel, p, max_tokens); }));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    GreedyStreamResult r = streams[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message() << "\n" << log();
    EXPECT_EQ(r.tokens, GreedyReference(model, prompts[i], max_tokens)) << "prompt " << i;
  }
}

}  // namespace tessera::testing
