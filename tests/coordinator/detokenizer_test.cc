// Tests for coordinator/text/detokenizer: streaming output equals Decode of all ids for every
// tokenizer format (byte-level BPE tokenizer.json, tiktoken, SentencePiece), never broken UTF-8,
// characters split across tokens held back, SentencePiece's leading space, specials.
#include "coordinator/text/detokenizer.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "coordinator/text/tokenizer.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "tests/coordinator/llama_json_test_util.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

// Whether `s` is valid UTF-8.
bool IsValidUtf8(const std::string& s) { return ToValidUtf8(s) == s; }

// A tiktoken file made from gpt-oss's tokenizer.json (its ranks are o200k's), with the Kimi
// pattern and a few specials, as LoadTokenizer reads a Kimi K2 directory.
std::string MakeTiktokenDir() {
  const std::string dir = testing::MakeTempDir("detok_tiktoken");
  auto gpt = Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/gpt_oss/tokenizer.json");
  CHECK(gpt.ok()) << gpt.status();
  std::ofstream out(dir + "/tiktoken.model", std::ios::binary);
  int32_t n = 0;
  for (int32_t id = 0; id < (*gpt)->vocab_size(); ++id) {
    if ((*gpt)->IsSpecial(id) || !(*gpt)->IdToToken(id).has_value()) continue;
    std::string bytes;
    Tokenizer::DecodeState state;
    CHECK((*gpt)->AppendTokenBytes(id, false, &state, &bytes));
    out << absl::Base64Escape(bytes) << " " << id << "\n";
    n = std::max(n, id + 1);
  }
  out.close();
  std::ofstream config(dir + "/tokenizer_config.json");
  config << R"({"bos_token": "[BOS]", "eos_token": "[EOS]", "added_tokens_decoder": {)"
         << "\"" << n << R"(": {"content": "[BOS]", "special": true},)"
         << "\"" << n + 1 << R"(": {"content": "[EOS]", "special": true},)"
         << "\"" << n + 2 << R"(": {"content": "<|im_end|>", "special": true}}})";
  return dir;
}

const std::map<std::string, std::unique_ptr<Tokenizer>>& Tokenizers() {
  static const auto* toks = [] {
    auto* m = new std::map<std::string, std::unique_ptr<Tokenizer>>();
    const std::string td = testing::TestDataDir() + "/tokenizers/";
    for (const char* name : {"qwen3", "deepseek_v3", "gpt_oss", "mistral_v1"}) {
      auto t = LoadTokenizer(td + name);
      CHECK(t.ok()) << t.status();
      (*m)[name] = *std::move(t);
    }
    auto t = LoadTokenizer(MakeTiktokenDir());
    CHECK(t.ok()) << t.status();
    (*m)["tiktoken"] = *std::move(t);
    return m;
  }();
  return *toks;
}

const std::vector<std::string>& Corpus() {
  static const auto* corpus = new std::vector<std::string>{
      "Hello, world! How are you today?",
      "  leading spaces and\ttabs\n\nnewlines   ",
      "中文测试：今天天气很好。日本語のテキスト、カタカナ。한국어 텍스트",
      "مرحبا بالعالم — हिन्दी पाठ — ภาษาไทย",
      "emoji 👨‍👩‍👧‍👦 👍🏽 🏳️‍🌈 😀😀😀 𝕏𝕐",
      "code: for (int i = 0; i < n; ++i) { x[i] += 1; }  // done",
      "digits 12345678901234567890 and 3.14159",
      "<|im_start|>user\nhi<|im_end|> [BOS] <s> </s> [INST]",
      "café cafe\xCC\x81 Å Ω ﬁ",
      "rare: ꙮ 𓀀 𒀀 ᚠᛇᚻ",
  };
  return *corpus;
}

// Streams `ids` through a StreamingDetokenizer, checking that every chunk is valid UTF-8.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamingDetokenizer detok(tok, skip);
  std::string text;
  for (int32_t id : ids) {
    const std::string chunk = detok.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk)) << "chunk after id " << id;
    text += chunk;
  }
  const std::string tail = detok.Finish();
  EXPECT_TRUE(IsValidUtf8(tail));
  return text + tail;
}

class DetokenizerFormatTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DetokenizerFormatTest, StreamEqualsDecodeOverCorpus) {
  const Tokenizer& tok = *Tokenizers().at(GetParam());
  for (const std::string& s : Corpus()) {
    for (bool skip : {false, true}) {
      const std::vector<int32_t> ids = tok.Encode(s, /*allow_special=*/true);
      auto decoded = tok.Decode(ids, skip);
      ASSERT_TRUE(decoded.ok());
      EXPECT_EQ(Stream(tok, ids, skip), *decoded) << s << " skip=" << skip;
    }
  }
}

TEST_P(DetokenizerFormatTest, StreamEqualsDecodeForInvalidByteSequences) {
  // Raw byte tokens in orders a model may sample: truncated sequences, stray continuation
  // bytes, overlong leads, a sequence cut by a special token.
  const Tokenizer& tok = *Tokenizers().at(GetParam());
  const std::vector<std::string> inputs = {"\xF0\x9F\x98", "\x80\x80 a", "\xE4\xBD\xA0\xE4",
                                           "\xC0\xAF x \xED\xA0\x80 y", "\xF4\x90\x80\x80"};
  std::vector<int32_t> byte_ids;
  for (int b = 0; b < 256; ++b) {
    const std::string piece =
        GetParam() == "mistral_v1" ? absl::StrCat("<0x", absl::Hex(b, absl::kZeroPad2), ">")
                                   : std::string();
    std::optional<int32_t> id;
    if (piece.empty()) {
      auto ids = tok.Encode(std::string(1, static_cast<char>(b)), false);
      if (ids.size() == 1) id = ids[0];
    } else {
      std::string upper = piece;
      for (char& c : upper) c = (c >= 'a' && c <= 'f') ? c - 'a' + 'A' : c;
      id = tok.TokenToId(upper);
    }
    ASSERT_TRUE(id.has_value()) << GetParam() << " byte " << b;
    byte_ids.push_back(*id);
  }
  const std::vector<int32_t> specials = {*tok.eos_id()};
  for (const std::string& s : inputs) {
    std::vector<int32_t> ids;
    for (unsigned char c : s) ids.push_back(byte_ids[c]);
    for (bool skip : {false, true}) {
      auto decoded = tok.Decode(ids, skip);
      ASSERT_TRUE(decoded.ok());
      EXPECT_TRUE(IsValidUtf8(*decoded));
      EXPECT_EQ(Stream(tok, ids, skip), *decoded);
      // The same bytes with an EOS in the middle.
      std::vector<int32_t> cut = ids;
      cut.insert(cut.begin() + static_cast<long>(ids.size() / 2), specials[0]);
      auto decoded_cut = tok.Decode(cut, skip);
      ASSERT_TRUE(decoded_cut.ok());
      EXPECT_EQ(Stream(tok, cut, skip), *decoded_cut);
    }
  }
}


INSTANTIATE_TEST_SUITE_P(AllFormats, DetokenizerFormatTest,
                         ::testing::Values("qwen3", "deepseek_v3", "gpt_oss", "mistral_v1",
                                           "tiktoken"));

TEST(DetokenizerTest, EmojiSplitOverFourByteTokensIsHeldBack) {
  const Tokenizer& tok = *Tokenizers().at("qwen3");
  std::vector<int32_t> ids;
  for (unsigned char c : std::string("\xF0\x9F\x98\x80")) {  // U+1F600 byte by byte.
    auto one = tok.Encode(std::string(1, static_cast<char>(c)));
    ASSERT_EQ(one.size(), 1u);
    ids.push_back(one[0]);
  }
  StreamingDetokenizer detok(tok, false);
  EXPECT_EQ(detok.Push(ids[0]), "");
  EXPECT_EQ(detok.Push(ids[1]), "");
  EXPECT_EQ(detok.Push(ids[2]), "");
  EXPECT_EQ(detok.Push(ids[3]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(detok.Finish(), "");
}

TEST(DetokenizerTest, IncompleteTailBecomesReplacementCharacterAtFinish) {
  const Tokenizer& tok = *Tokenizers().at("gpt_oss");
  StreamingDetokenizer detok(tok, false);
  auto a = tok.Encode("a");
  auto lead = tok.Encode("\xE4");
  ASSERT_EQ(lead.size(), 1u);
  EXPECT_EQ(detok.Push(a[0]), "a");
  EXPECT_EQ(detok.Push(lead[0]), "");
  EXPECT_EQ(detok.Finish(), "\uFFFD");
}

TEST(DetokenizerTest, SentencePieceDropsOnlyTheFirstLeadingSpace) {
  const Tokenizer& tok = *Tokenizers().at("mistral_v1");
  const std::vector<int32_t> ids = tok.Encode("Hello world", false);
  ASSERT_GE(ids.size(), 2u);
  StreamingDetokenizer detok(tok, true);
  std::string text = detok.Push(*tok.bos_id());  // Invisible; the next piece is still first.
  EXPECT_EQ(text, "");
  text += detok.Push(ids[0]);
  EXPECT_EQ(text, "Hello");
  for (size_t i = 1; i < ids.size(); ++i) text += detok.Push(ids[i]);
  EXPECT_EQ(text + detok.Finish(), "Hello world");
}

TEST(DetokenizerTest, SentencePieceByteRunCutByControlTokenIsReplaced) {
  // SentencePiece decodes each run of byte pieces separately: E2 | </s> | 82 AC is three
  // invalid bytes, not "€".
  const Tokenizer& tok = *Tokenizers().at("mistral_v1");
  const std::vector<int32_t> ids = {*tok.TokenToId("<0xE2>"), *tok.eos_id(),
                                    *tok.TokenToId("<0x82>"), *tok.TokenToId("<0xAC>")};
  auto decoded = tok.Decode(ids, true);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(Stream(tok, ids, true), *decoded);
}

TEST(DetokenizerTest, LlamaJsonStripsOnlyTheFirstLeadingSpace) {
  const auto tok = LlamaStyleTokenizer();
  ASSERT_EQ(tok->Encode("Hi Hi"), (std::vector<int32_t>{263, 263}));
  StreamingDetokenizer detok(*tok, false);
  EXPECT_EQ(detok.Push(263), "Hi");
  EXPECT_EQ(detok.Push(263), " Hi");
  EXPECT_EQ(detok.Finish(), "");
  // "▁" alone first: stripped to nothing, and the next token keeps its space.
  EXPECT_EQ(detok.Push(259), "");
  EXPECT_EQ(detok.Push(263), " Hi");
  EXPECT_EQ(detok.Finish(), "");
}

TEST(DetokenizerTest, LlamaJsonByteRunIsHeldUntilItEnds) {
  const auto tok = LlamaStyleTokenizer();
  const std::vector<int32_t> ids = {263, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 263};  // Hi€ Hi
  ASSERT_EQ(tok->Encode("Hi€ Hi"), ids);
  StreamingDetokenizer detok(*tok, false);
  EXPECT_EQ(detok.Push(ids[0]), "Hi");
  EXPECT_EQ(detok.Push(ids[1]), "");
  EXPECT_EQ(detok.Push(ids[2]), "");
  EXPECT_EQ(detok.Push(ids[3]), "");  // Complete, but a later byte could still spoil the run.
  EXPECT_EQ(detok.Push(ids[4]), "€ Hi");
  EXPECT_EQ(detok.Finish(), "");
  EXPECT_EQ(*tok->Decode(ids), "Hi€ Hi");
}

TEST(DetokenizerTest, LlamaJsonInvalidByteRunIsReplacedWhole) {
  // `tokenizers`' ByteFallback: E2 82 AC FF is not valid UTF-8 as a whole, so all four bytes
  // become U+FFFD (not "€\uFFFD").
  const auto tok = LlamaStyleTokenizer();
  const std::vector<int32_t> ids = {3 + 0xE2, 3 + 0x82, 3 + 0xAC, 3 + 0xFF};
  EXPECT_EQ(*tok->Decode(ids), "\uFFFD\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(Stream(*tok, ids, false), "\uFFFD\uFFFD\uFFFD\uFFFD");
}

TEST(DetokenizerTest, LlamaJsonSkippedSpecialDoesNotCutAByteRun) {
  const auto tok = LlamaStyleTokenizer();
  const std::vector<int32_t> ids = {3 + 0xE2, 3 + 0x82, 1, 3 + 0xAC};
  EXPECT_EQ(*tok->Decode(ids, true), "€");
  EXPECT_EQ(Stream(*tok, ids, true), "€");
  EXPECT_EQ(*tok->Decode(ids, false), "\uFFFD\uFFFD<s>\uFFFD");
  EXPECT_EQ(Stream(*tok, ids, false), "\uFFFD\uFFFD<s>\uFFFD");
}

TEST(DetokenizerTest, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& tok = *Tokenizers().at("qwen3");
  const std::vector<int32_t> ids = tok.Encode("<|im_start|>hi<|im_end|>");
  EXPECT_EQ(Stream(tok, ids, true), "hi");
  EXPECT_EQ(Stream(tok, ids, false), "<|im_start|>hi<|im_end|>");
}

TEST(DetokenizerTest, UnknownIdContributesNothingAndIsCounted) {
  const Tokenizer& tok = *Tokenizers().at("qwen3");
  StreamingDetokenizer detok(tok, false);
  EXPECT_EQ(detok.Push(tok.vocab_size() + 5), "");
  EXPECT_EQ(detok.num_unknown_ids(), 1);
  EXPECT_EQ(detok.Push(tok.Encode("x")[0]), "x");
}

TEST(DetokenizerTest, LongStreamMatchesDecode) {
  // 200 KB through the stream: linear time, same text.
  const Tokenizer& tok = *Tokenizers().at("deepseek_v3");
  std::string s;
  for (int i = 0; i < 2000; ++i) s += Corpus()[i % Corpus().size()];
  const std::vector<int32_t> ids = tok.Encode(s);
  auto decoded = tok.Decode(ids);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(Stream(tok, ids, false), *decoded);
}

}  // namespace
}  // namespace tessera
