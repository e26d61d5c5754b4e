// Tests for coordinator/text/tokenizer: the llama.cpp Qwen2 tokenizer vectors encoded with the
// Qwen3 tokenizer.json, round trips, special tokens and load errors.
#include "coordinator/text/tokenizer.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "kernels/base/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Qwen3Path() { return testing::TestDataDir() + "/tokenizers/qwen3/tokenizer.json"; }

const Tokenizer& Qwen3() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::FromFile(Qwen3Path());
    CHECK(t.ok()) << t.status();
    return t->release();
  }();
  return *tok;
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

// qwen2.inp: cases each followed by a line "__ggml_vocab_test__"; a case's text is its lines
// without the final newline. qwen2.out: one line per case, ids separated by spaces.
std::vector<Case> LoadCases() {
  const std::string dir = testing::TestDataDir() + "/tokenizer_vectors/";
  const std::string inp = ReadFile(dir + "qwen2.inp");
  const std::string outp = ReadFile(dir + "qwen2.out");
  std::vector<std::string> texts = absl::StrSplit(inp, "__ggml_vocab_test__\n");
  EXPECT_TRUE(!texts.empty() && texts.back().empty());
  if (!texts.empty()) texts.pop_back();
  std::vector<std::string> lines = absl::StrSplit(outp, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  EXPECT_EQ(texts.size(), lines.size());
  std::vector<Case> cases;
  for (size_t i = 0; i < texts.size() && i < lines.size(); ++i) {
    Case c;
    c.text = texts[i];
    if (!c.text.empty() && c.text.back() == '\n') c.text.pop_back();
    for (absl::string_view f : absl::StrSplit(lines[i], ' ', absl::SkipEmpty())) {
      c.ids.push_back(std::stoi(std::string(f)));
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

TEST(TokenizerTest, LoadsAllQwen2Vectors) { EXPECT_EQ(LoadCases().size(), 46u); }

class Qwen2VectorTest : public ::testing::TestWithParam<int> {};

TEST_P(Qwen2VectorTest, EncodeMatchesReference) {
  const std::vector<Case> cases = LoadCases();
  ASSERT_LT(GetParam(), static_cast<int>(cases.size()));
  const Case& c = cases[GetParam()];
  EXPECT_EQ(Qwen3().Encode(c.text), c.ids) << "text: '" << c.text << "'";
}

TEST_P(Qwen2VectorTest, DecodeRoundTrips) {
  const std::vector<Case> cases = LoadCases();
  ASSERT_LT(GetParam(), static_cast<int>(cases.size()));
  const Case& c = cases[GetParam()];
  auto text = Qwen3().Decode(Qwen3().Encode(c.text));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, c.text);
}

INSTANTIATE_TEST_SUITE_P(AllCases, Qwen2VectorTest, ::testing::Range(0, 46));

TEST(TokenizerTest, SpecialTokenIsOneIdWhenAllowed) {
  const Tokenizer& tok = Qwen3();
  const auto im_start = tok.TokenToId("<|im_start|>");
  const auto im_end = tok.TokenToId("<|im_end|>");
  ASSERT_TRUE(im_start.has_value());
  ASSERT_TRUE(im_end.has_value());
  const std::vector<int32_t> ids = tok.Encode("<|im_start|>user\nhi<|im_end|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), *im_start);
  EXPECT_EQ(ids.back(), *im_end);
  auto text = tok.Decode(ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<|im_start|>user\nhi<|im_end|>");
  auto skipped = tok.Decode(ids, /*skip_special_tokens=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "user\nhi");
}

TEST(TokenizerTest, SpecialTokenIsTextWhenNotAllowed) {
  const Tokenizer& tok = Qwen3();
  const std::string s = "<|im_start|>user";
  const std::vector<int32_t> ids = tok.Encode(s, /*allow_special=*/false);
  EXPECT_GT(ids.size(), 2u);
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(*tok.TokenToId("<|im_start|>"))));
  auto text = tok.Decode(ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, s);
}

TEST(TokenizerTest, VocabSizeCoversAddedTokens) {
  const Tokenizer& tok = Qwen3();
  const auto eot = tok.TokenToId("<|endoftext|>");
  ASSERT_TRUE(eot.has_value());
  EXPECT_EQ(*eot, 151643);
  EXPECT_GT(tok.vocab_size(), *eot);
  EXPECT_FALSE(tok.TokenToId("no such token in vocab").has_value());
}

TEST(TokenizerTest, DecodeRejectsOutOfRangeId) {
  EXPECT_FALSE(Qwen3().Decode({Qwen3().vocab_size()}).ok());
  EXPECT_FALSE(Qwen3().Decode({-1}).ok());
}

TEST(TokenizerTest, MissingFileErrorNamesFile) {
  const std::string path = testing::MakeTempDir("tok_missing") + "/nope.json";
  auto t = Tokenizer::FromFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr(path));
}

TEST(TokenizerTest, CorruptFileErrorNamesFile) {
  const std::string path = testing::MakeTempDir("tok_corrupt") + "/tokenizer.json";
  std::ofstream(path) << "{\"model\": {\"type\": \"BPE\", \"vocab\": ";
  auto t = Tokenizer::FromFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr(path));
}

TEST(TokenizerTest, MissingMergesErrorNamesField) {
  const std::string path = testing::MakeTempDir("tok_nomerges") + "/tokenizer.json";
  std::ofstream(path) << "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}";
  auto t = Tokenizer::FromFile(path);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr(path));
  EXPECT_THAT(std::string(t.status().message()), ::testing::HasSubstr("model."));
}

class OtherTokenizerTest : public ::testing::TestWithParam<const char*> {};

TEST_P(OtherTokenizerTest, LoadsAndRoundTrips) {
  auto t = Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/" + GetParam() +
                               "/tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string s = "Hello world! 12345 don't\n\n  \tÄpfel 你好 🦙 <tag>";
  const std::vector<int32_t> ids = (*t)->Encode(s);
  EXPECT_FALSE(ids.empty());
  auto back = (*t)->Decode(ids);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, s);
}

INSTANTIATE_TEST_SUITE_P(Files, OtherTokenizerTest,
                         ::testing::Values("qwen3", "deepseek_v3", "gpt_oss"));

}  // namespace
}  // namespace tessera
