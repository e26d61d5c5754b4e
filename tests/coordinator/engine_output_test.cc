// LlmEngine output processing with the real Qwen3 tokenizer: text deltas, stop strings matched
// across token boundaries and held back while they may still match, multi-byte characters.
// The fake model replays a scripted token sequence (the encoding of a text).
#include <memory>
#include <string>
#include <vector>

#include "coordinator/engine/llm_engine.h"
#include "coordinator/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/coordinator/engine_test_util.h"
#include "tests/coordinator/fake_step_executor.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::Collector;
using testing::FakeStepExecutor;
using testing::Stream;

class EngineOutput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/qwen3/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  // Runs one request whose model output replays `script` (then repeats it) and returns its stream;
  // `deltas` receives every output's text.
  Stream Run(const std::vector<int32_t>& script, std::vector<std::string> stop, int max_tokens,
             std::vector<std::string>* deltas = nullptr,
             std::vector<int32_t> eos = {}, int min_tokens = 0,
             std::vector<int32_t> stop_token_ids = {}) {
    FakeStepExecutor executor(
        64, 16, [script](const std::vector<int32_t>&, uint64_t, int64_t index) {
          return script[index % script.size()];
        });
    LlmEngineOptions options;
    options.vocab_size = tokenizer_->vocab_size();
    options.max_model_len = 1024;
    options.tokenizer = tokenizer_;
    options.eos_token_ids = eos;
    auto engine = *LlmEngine::Create(&executor, options);
    Collector collector;
    OutputCallback collect = collector.For("r");
    std::vector<std::string> local;
    GenerateRequest r;
    r.request_id = "r";
    r.prompt_ids = tokenizer_->Encode("Say something.");
    r.sampling.max_tokens = max_tokens;
    r.sampling.stop = std::move(stop);
    r.sampling.min_tokens = min_tokens;
    r.sampling.stop_token_ids = std::move(stop_token_ids);
    EXPECT_TRUE(engine
                    ->Submit(r,
                             [&](GenerateOutput out) {
                               local.push_back(out.text);
                               collect(std::move(out));
                             })
                    .ok());
    EXPECT_TRUE(collector.WaitFinished("r"));
    EXPECT_TRUE(engine->WaitIdle(10));
    if (deltas != nullptr) *deltas = local;
    return collector.Get("r");
  }

  static Tokenizer* tokenizer_;
};

Tokenizer* EngineOutput::tokenizer_ = nullptr;

TEST_F(EngineOutput, TextIsTheDecodedOutput) {
  const std::string text = "Hello there, my friend. The answer is 42.";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  Stream s = Run(script, {}, static_cast<int>(script.size()));
  EXPECT_EQ(s.text, text);
  EXPECT_EQ(s.finish_reason, FinishReason::kLength);
  EXPECT_EQ(s.tokens, script);
}

TEST_F(EngineOutput, StopStringAcrossTokensEndsAndIsNotEmitted) {
  const std::string text = "Hello there, my friend. The answer is 42 and more text follows.";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  // "wer is 4" spans the tokens " answer", " is" and " " / "4".
  Stream s = Run(script, {"wer is 4"}, 100);
  EXPECT_EQ(s.text, "Hello there, my friend. The ans");
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.stop_reason, "wer is 4");
  EXPECT_LT(s.tokens.size(), script.size());
}

TEST_F(EngineOutput, PossibleStopPrefixIsHeldBackThenReleased) {
  const std::string text = "The answer is 42 and more.";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  std::vector<std::string> deltas;
  Stream s = Run(script, {"answer was"}, static_cast<int>(script.size()), &deltas);
  EXPECT_EQ(s.text, text);  // never matched: everything is emitted by the end
  EXPECT_EQ(s.finish_reason, FinishReason::kLength);
  // Tokens "The", " answer", " is": "answer" is held back (it could start "answer was") and
  // released with " is".
  ASSERT_GE(deltas.size(), 3u);
  EXPECT_EQ(deltas[0], "The");
  EXPECT_EQ(deltas[1], " ");
  EXPECT_EQ(deltas[2], "answer is");
}

TEST_F(EngineOutput, EarliestOfSeveralStopStringsWins) {
  const std::string text = "one two three four five";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  Stream s = Run(script, {"four", "two th"}, 100);
  EXPECT_EQ(s.text, "one ");
  EXPECT_EQ(s.stop_reason, "two th");
}

TEST_F(EngineOutput, MultiByteCharactersAreNeverSplit) {
  const std::string text = "Grüße 🙂👍🏽 日本語 done";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  ASSERT_GT(script.size(), 8u);
  std::vector<std::string> deltas;
  Stream s = Run(script, {}, static_cast<int>(script.size()), &deltas);
  EXPECT_EQ(s.text, text);
  for (const std::string& d : deltas) {
    // Every delta is valid UTF-8 on its own: no lead byte is missing its continuation.
    for (size_t i = 0; i < d.size();) {
      unsigned char c = static_cast<unsigned char>(d[i]);
      size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
      ASSERT_LE(i + len, d.size()) << "split character in delta '" << d << "'";
      i += len;
    }
  }
}

TEST_F(EngineOutput, StopStringInsideMultiByteText) {
  const std::string text = "价格是 100 元。谢谢";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  Stream s = Run(script, {"元。"}, 100);
  EXPECT_EQ(s.text, "价格是 100 ");
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
}

TEST_F(EngineOutput, EosTokenEndsWithoutText) {
  std::optional<int32_t> im_end = tokenizer_->TokenToId("<|im_end|>");
  ASSERT_TRUE(im_end.has_value());
  std::vector<int32_t> script = tokenizer_->Encode("Fine, thanks");
  script.push_back(*im_end);
  Stream s = Run(script, {}, 100, nullptr, {*im_end});
  EXPECT_EQ(s.text, "Fine, thanks");
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.tokens.back(), *im_end);
  EXPECT_EQ(s.usage.completion_tokens, static_cast<int64_t>(script.size()));
  EXPECT_EQ(s.stop_token_id, -1);  // EOS is not a stop_reason (as in vLLM)
  EXPECT_EQ(s.stop_reason, "");
}

TEST_F(EngineOutput, AStopTokenIdIsReportedAsTheStopReason) {
  std::optional<int32_t> im_end = tokenizer_->TokenToId("<|im_end|>");
  ASSERT_TRUE(im_end.has_value());
  std::vector<int32_t> script = tokenizer_->Encode("Fine, thanks");
  script.push_back(*im_end);
  Stream s = Run(script, {}, 100, nullptr, {}, 0, {*im_end});
  EXPECT_EQ(s.text, "Fine, thanks");
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.stop_token_id, *im_end);
  // Also an EOS id: EOS wins, no stop_reason.
  Stream both = Run(script, {}, 100, nullptr, {*im_end}, 0, {*im_end});
  EXPECT_EQ(both.stop_token_id, -1);
}

TEST_F(EngineOutput, StopStringsAreNotMatchedBeforeMinTokens) {
  const std::string text = "No. No. Yes. No. Done";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  const std::vector<int32_t> first_no = tokenizer_->Encode("No");
  ASSERT_EQ(first_no.size(), 1u);
  ASSERT_EQ(script[0], first_no[0]);
  // Without min_tokens the first "No" stops at once; with min_tokens past the second "No" the
  // next match is the third one (after "Yes.").
  EXPECT_EQ(Run(script, {"No"}, 100).text, "");
  const std::vector<int32_t> upto_yes = tokenizer_->Encode("No. No. Yes");
  Stream s = Run(script, {"No"}, 100, nullptr, {}, static_cast<int>(upto_yes.size()));
  EXPECT_EQ(s.text, "No. No. Yes. ");
  EXPECT_EQ(s.finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.stop_reason, "No");
}

TEST_F(EngineOutput, MinTokensAboveMaxTokensIsInvalid) {
  FakeStepExecutor executor(8, 16, [](const std::vector<int32_t>&, uint64_t, int64_t) {
    return 1;
  });
  LlmEngineOptions options;
  options.vocab_size = tokenizer_->vocab_size();
  options.max_model_len = 64;
  auto engine = *LlmEngine::Create(&executor, options);
  GenerateRequest r;
  r.prompt_ids = {1, 2, 3};
  r.sampling.max_tokens = 4;
  r.sampling.min_tokens = 5;
  absl::Status st = engine->Submit(r, [](GenerateOutput) {});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("min_tokens"));
}

TEST_F(EngineOutput, HeldBackTextIsFlushedAtMaxTokens) {
  const std::string text = "wait for the answ";
  std::vector<int32_t> script = tokenizer_->Encode(text);
  Stream s = Run(script, {"answer"}, static_cast<int>(script.size()));
  EXPECT_EQ(s.text, text);
  EXPECT_EQ(s.finish_reason, FinishReason::kLength);
}

}  // namespace
}  // namespace tessera
