// gRPC Generate with a text prompt applies the tokenizer's post-processor (add_special_tokens,
// unset = true, as vLLM's completions): a tiny llama checkpoint made by `tessera make-model
// --tokenizer` with the Mixtral SentencePiece tokenizer (testdata mistral_v1; BOS added as
// transformers' LlamaTokenizer does) behind a real `tessera serve` on 127.0.0.1. Token-id prompts
// are never changed; the Tokenize RPC adds BOS only when asked. (The HTTP side:
// tests/integration/add_special_tokens_serve_test.py.)
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "tessera/v1/generation.grpc.pb.h"
#include "tests/integration/process_util.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
using testing::ChildProcess;

class ServeAddSpecialTokensTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::MakeTempDir("serve_add_special_tokens");
    model_ = dir + "/model";
    {
      ChildProcess make({testing::TesseraBinary(), "make-model", "--arch", "llama", "--preset",
                         "tiny", "--seed", "2", "--tokenizer",
                         testing::TestDataDir() + "/tokenizers/mistral_v1", "--out", model_},
                        dir + "/make_model.log");
      std::optional<int> code = make.Wait(milliseconds(120000));
      CHECK(code.has_value() && *code == 0) << make.Log();
    }
    const int port = testing::FreePort();
    server_ = new ChildProcess(
        {testing::TesseraBinary(), "serve", "--model", model_, "--served-model-name", "tiny",
         "--grpc-port", absl::StrCat(port), "--http-port", "0", "--local-workers", "1",
         "--worker-threads", "1", "--kv-cache-memory", "16MiB"},
        dir + "/serve.log");
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    CHECK(testing::WaitFor([] { return Tokenize("x").has_value(); }, milliseconds(90000)))
        << server_->Log();
  }
  static void TearDownTestSuite() {
    server_->Kill(SIGTERM);
    server_->Wait(milliseconds(15000));
    delete server_;
    delete channel_;
  }

  // Tokenize RPC (the text alone, no post-processor); nullopt on an RPC error.
  static std::optional<std::vector<int32_t>> Tokenize(
      const std::string& text, std::optional<bool> add_special_tokens = std::nullopt) {
    auto stub = v1::Generation::NewStub(*channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(2000));
    v1::TokenizeRequest req;
    req.set_text(text);
    if (add_special_tokens.has_value()) req.set_add_special_tokens(*add_special_tokens);
    v1::TokenizeResponse resp;
    if (!stub->Tokenize(&ctx, req, &resp).ok()) return std::nullopt;
    return std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end());
  }

  // usage.prompt_tokens of a one-token greedy Generate.
  static int64_t PromptTokens(v1::GenerateRequest req) {
    req.mutable_sampling()->set_temperature(0);
    req.mutable_sampling()->set_max_tokens(1);
    auto stub = v1::Generation::NewStub(*channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(60000));
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse r, last;
    while (reader->Read(&r)) last = r;
    const grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return last.usage().prompt_tokens();
  }

  static inline std::string model_;
  static inline ChildProcess* server_ = nullptr;
  static inline std::shared_ptr<grpc::Channel>* channel_ = nullptr;
};

constexpr char kText[] = "Hello world, how are you?";

TEST_F(ServeAddSpecialTokensTest, TextPromptGetsBosByDefault) {
  const std::optional<std::vector<int32_t>> plain = Tokenize(kText);
  ASSERT_TRUE(plain.has_value());
  ASSERT_FALSE(plain->empty());
  EXPECT_NE((*plain)[0], 1);
  v1::GenerateRequest req;
  req.set_prompt(kText);
  EXPECT_EQ(PromptTokens(req), static_cast<int64_t>(plain->size()) + 1);
}

TEST_F(ServeAddSpecialTokensTest, AddSpecialTokensFalseEncodesTheTextAlone) {
  const std::optional<std::vector<int32_t>> plain = Tokenize(kText);
  ASSERT_TRUE(plain.has_value());
  v1::GenerateRequest req;
  req.set_prompt(kText);
  req.set_add_special_tokens(false);
  EXPECT_EQ(PromptTokens(req), static_cast<int64_t>(plain->size()));
}

TEST_F(ServeAddSpecialTokensTest, TokenizeAddsBosOnlyWhenAsked) {
  const std::optional<std::vector<int32_t>> plain = Tokenize(kText);
  const std::optional<std::vector<int32_t>> with = Tokenize(kText, true);
  const std::optional<std::vector<int32_t>> without = Tokenize(kText, false);
  ASSERT_TRUE(plain.has_value() && with.has_value() && without.has_value());
  std::vector<int32_t> want = {1};
  want.insert(want.end(), plain->begin(), plain->end());
  EXPECT_EQ(*with, want);
  EXPECT_EQ(*without, *plain);
}

TEST_F(ServeAddSpecialTokensTest, TokenIdPromptIsUnchanged) {
  v1::GenerateRequest req;
  for (int32_t id : {22557, 1526, 28723}) req.add_prompt_token_ids(id);
  req.set_add_special_tokens(true);
  EXPECT_EQ(PromptTokens(req), 3);
}

}  // namespace
}  // namespace tessera
