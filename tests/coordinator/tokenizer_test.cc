// Tests for coordinator/text/tokenizer: the llama.cpp Qwen2 tokenizer vectors encoded with the
// Qwen3 tokenizer.json, round trips, special tokens and load errors.
#include "coordinator/text/tokenizer.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/base/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/coordinator/llama_json_test_util.h"
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

// Reference ids from Hugging Face `tokenizers` 0.23.3: encode(text, add_special_tokens=False).
struct RefCase {
  const char* model;
  const char* text;
  std::vector<int32_t> ids;
};

const std::vector<RefCase>& RefCases() {
  static const auto* cases = new std::vector<RefCase>{
      {"qwen3",
       "Hello world! 12345 don't\012\012  \011\303\204pfel \344\275\240\345\245\275 \360\237\246"
       "\231 <tag>",
       {9707, 1879, 0, 220, 16, 17, 18, 19, 20, 1513, 944, 271, 256, 197, 86975, 15897, 301, 220,
        108386, 11162, 99, 247, 366, 4578, 29}},
      {"qwen3",
       "I'VE been 'told' he's 1234567 years old... WE'LL SEE!!!\015\012\015\012",
       {40, 6, 4491, 1012, 364, 83, 813, 6, 566, 594, 220, 16, 17, 18, 19, 20, 21, 22, 1635, 2310,
        1112, 19677, 6, 4086, 26103, 12069, 871}},
      {"qwen3",
       "   leading and trailing   \012\012\012   ",
       {256, 6388, 323, 27748, 262, 1406, 262}},
      {"qwen3",
       "\343\201\262\343\202\211\343\201\214\343\201\252 \343\202\253\343\202\277\343\202\253\343"
       "\203\212 \346\274\242\345\255\227\346\267\267\343\201\230\343\202\212\346\226\207 \355"
       "\225\234\352\265\255\354\226\264 \316\225\316\273\316\273\316\267\316\275\316\271\316\272"
       "\316\254 \321\200\321\203\321\201\321\201\320\272\320\270\320\271 \330\247\331\204\330"
       "\271\330\261\330\250\331\212\330\251",
       {124877, 32403, 28195, 25770, 17587, 104, 46207, 70393, 95352, 6567, 120, 95, 18600, 100235,
        99104, 30331, 16744, 130092, 31079, 7851, 243, 33486, 33486, 41424, 33269, 29762, 67337,
        74134, 18108, 43055, 126302, 129071}},
      {"qwen3",
       "def f(x):\012    return x**2  # comment\012\011pass\012",
       {750, 282, 2075, 982, 262, 470, 856, 334, 17, 220, 671, 3980, 198, 41431, 198}},
      {"qwen3",
       "https://example.com/a/b?c=d&e=f  $$$ ~~~ ++--",
       {2428, 1110, 8687, 905, 14186, 3470, 30, 66, 25405, 68070, 18111, 220, 97700, 3968, 5817,
        3443, 313}},
      {"qwen3",
       "<|im_start|>system\012You are helpful.<|im_end|>\012<|endoftext|>",
       {151644, 8948, 198, 2610, 525, 10950, 13, 151645, 198, 151643}},
      {"qwen3",
       "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234><\357\275\234User\357"
       "\275\234>hi<\357\275\234Assistant\357\275\234>",
       {27, 130957, 7265, 10417, 223, 1055, 10417, 223, 51889, 130957, 1784, 130957, 1474, 130957,
        29, 6023, 27, 130957, 71703, 130957, 29}},
      {"qwen3",
       "<|start|>user<|message|>Hi<|end|>",
       {27, 91, 2468, 91, 29, 872, 27, 91, 1994, 91, 29, 13048, 27, 91, 408, 91, 29}},
      {"qwen3",
       "\360\237\246\231\360\237\246\231\360\237\246\231 \342\205\267 \302\275 \342\221\240 x\302"
       "\262  \302\240nbsp\342\200\203em\342\200\213zw",
       {149955, 149955, 149955, 220, 70467, 115, 220, 26062, 220, 48312, 254, 856, 29456, 256, 4102,
        5674, 378, 225, 336, 15692, 30781}},
      {"deepseek_v3",
       "Hello world! 12345 don't\012\012  \011\303\204pfel \344\275\240\345\245\275 \360\237\246"
       "\231 <tag>",
       {19923, 2058, 3, 223, 6895, 1883, 2090, 1664, 271, 262, 200, 38857, 33015, 317, 223, 30594,
        7351, 102, 250, 818, 24164, 32}},
      {"deepseek_v3",
       "I'VE been 'told' he's 1234567 years old... WE'LL SEE!!!\015\012\015\012",
       {43, 9, 23584, 1047, 905, 86, 1129, 9, 468, 734, 223, 6895, 18009, 25, 1737, 3072, 1613,
        33418, 9, 3699, 100503, 34513, 204, 201, 204, 201}},
      {"deepseek_v3",
       "   leading and trailing   \012\012\012   ",
       {262, 6646, 305, 52964, 361, 6328, 361}},
      {"deepseek_v3",
       "\343\201\262\343\202\211\343\201\214\343\201\252 \343\202\253\343\202\277\343\202\253\343"
       "\203\212 \346\274\242\345\255\227\346\267\267\343\201\230\343\202\212\346\226\207 \355"
       "\225\234\352\265\255\354\226\264 \316\225\316\273\316\273\316\267\316\275\316\271\316\272"
       "\316\254 \321\200\321\203\321\201\321\201\320\272\320\270\320\271 \330\247\331\204\330"
       "\271\330\261\330\250\331\212\330\251",
       {40259, 4970, 2936, 2942, 223, 15961, 11767, 15961, 27071, 223, 29069, 2024, 5764, 17580,
        4553, 978, 51345, 9227, 19217, 43595, 20975, 39641, 16980, 55595}},
      {"deepseek_v3",
       "def f(x):\012    return x**2  # comment\012\011pass\012",
       {3465, 285, 4042, 3395, 361, 1354, 1527, 666, 20, 223, 1823, 7006, 201, 200, 9762, 201}},
      {"deepseek_v3",
       "https://example.com/a/b?c=d&e=f  $$$ ~~~ ++--",
       {5395, 2272, 30357, 2193, 20922, 9928, 33, 69, 59107, 8, 71, 46584, 223, 120051, 42617, 96,
        16571, 610}},
      {"deepseek_v3",
       "<|im_start|>system\012You are helpful.<|im_end|>\012<|endoftext|>",
       {30, 94, 328, 37864, 94, 32, 27824, 201, 3476, 477, 11502, 32334, 94, 328, 42616, 94, 1018,
        30, 94, 523, 2154, 2067, 94, 32}},
      {"deepseek_v3",
       "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234><\357\275\234User\357"
       "\275\234>hi<\357\275\234Assistant\357\275\234>",
       {0, 128803, 6366, 128804}},
      {"deepseek_v3",
       "<|start|>user<|message|>Hi<|end|>",
       {30, 94, 10513, 94, 32, 5265, 30, 94, 20400, 94, 32, 23166, 30, 94, 523, 94, 32}},
      {"deepseek_v3",
       "\360\237\246\231\360\237\246\231\360\237\246\231 \342\205\267 \302\275 \342\221\240 x\302"
       "\262  \302\240nbsp\342\200\203em\342\200\213zw",
       {3574, 102, 250, 3574, 102, 250, 3574, 102, 250, 223, 23603, 118, 223, 23951, 223, 16994,
        1527, 1628, 262, 2162, 28706, 77469, 381, 35020, 19830}},
      {"gpt_oss",
       "Hello world! 12345 don't\012\012  \011\303\204pfel \344\275\240\345\245\275 \360\237\246"
       "\231 <tag>",
       {13225, 2375, 0, 220, 7633, 2548, 4128, 279, 256, 197, 12921, 16606, 296, 220, 177519, 9552,
        99, 247, 464, 7394, 29}},
      {"gpt_oss",
       "I'VE been 'told' he's 1234567 years old... WE'LL SEE!!!\015\012\015\012",
       {40, 6, 19511, 1339, 461, 83, 1280, 6, 19016, 220, 7633, 19354, 22, 2101, 2890, 1008, 26919,
        6, 7454, 83389, 10880, 1414}},
      {"gpt_oss",
       "   leading and trailing   \012\012\012   ",
       {256, 8117, 326, 57985, 271, 2499, 271}},
      {"gpt_oss",
       "\343\201\262\343\202\211\343\201\214\343\201\252 \343\202\253\343\202\277\343\202\253\343"
       "\203\212 \346\274\242\345\255\227\346\267\267\343\201\230\343\202\212\346\226\207 \355"
       "\225\234\352\265\255\354\226\264 \316\225\316\273\316\273\316\267\316\275\316\271\316\272"
       "\316\254 \321\200\321\203\321\201\321\201\320\272\320\270\320\271 \330\247\331\204\330"
       "\271\330\261\330\250\331\212\330\251",
       {60922, 8870, 6632, 5784, 52753, 12288, 14214, 27354, 82867, 95, 8134, 85591, 29884, 7297,
        4883, 52971, 5959, 175295, 33428, 172163, 33968}},
      {"gpt_oss",
       "def f(x):\012    return x**2  # comment\012\011pass\012",
       {1314, 285, 4061, 1883, 271, 622, 1215, 410, 17, 220, 1069, 5375, 198, 100653, 198}},
      {"gpt_oss",
       "https://example.com/a/b?c=d&e=f  $$$ ~~~ ++--",
       {4172, 1684, 18582, 1136, 23839, 7611, 30, 66, 56413, 63734, 40464, 220, 124032, 6574, 7739,
        7600, 375}},
      {"gpt_oss",
       "<|im_start|>system\012You are helpful.<|im_end|>\012<|endoftext|>",
       {27, 91, 321, 10949, 91, 29, 17360, 198, 3575, 553, 10297, 30502, 91, 321, 13707, 91, 523,
        199999}},
      {"gpt_oss",
       "<\357\275\234begin\342\226\201of\342\226\201sentence\357\275\234><\357\275\234User\357"
       "\275\234>hi<\357\275\234Assistant\357\275\234>",
       {27, 40105, 15563, 6762, 223, 1440, 6762, 223, 127943, 40105, 3784, 40105, 1844, 40105, 29,
        3686, 27, 40105, 91655, 40105, 29}},
      {"gpt_oss",
       "<|start|>user<|message|>Hi<|end|>",
       {200006, 1428, 200008, 12194, 200007}},
      {"gpt_oss",
       "\360\237\246\231\360\237\246\231\360\237\246\231 \342\205\267 \302\275 \342\221\240 x\302"
       "\262  \302\240nbsp\342\200\203em\342\200\213zw",
       {4103, 99, 247, 4103, 99, 247, 4103, 99, 247, 220, 25371, 115, 220, 27124, 220, 57019, 1215,
        13848, 256, 5310, 9431, 33203, 347, 3310, 16120}},
  };
  return *cases;
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

const Tokenizer& Load(const std::string& model) {
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto& slot = (*loaded)[model];
  if (slot == nullptr) {
    auto t = Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/" + model +
                                 "/tokenizer.json");
    CHECK(t.ok()) << t.status();
    slot = std::move(*t);
  }
  return *slot;
}

class ReferenceTest : public ::testing::TestWithParam<int> {};

TEST_P(ReferenceTest, EncodeMatchesHuggingFace) {
  ASSERT_LT(GetParam(), static_cast<int>(RefCases().size()));
  const RefCase& c = RefCases()[GetParam()];
  EXPECT_EQ(Load(c.model).Encode(c.text), c.ids) << c.model << ": '" << c.text << "'";
}

TEST_P(ReferenceTest, DecodeOfReferenceIdsIsText) {
  ASSERT_LT(GetParam(), static_cast<int>(RefCases().size()));
  const RefCase& c = RefCases()[GetParam()];
  auto text = Load(c.model).Decode(c.ids);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, c.text) << c.model;
}

INSTANTIATE_TEST_SUITE_P(HfTokenizers, ReferenceTest, ::testing::Range(0, 30));

TEST(TokenizerTest, Qwen3NormalizesToNfc) {
  if (!Tokenizer::AppliesNfc()) GTEST_SKIP() << "built without ICU: NFC is a no-op";
  const Tokenizer& tok = Qwen3();
  // "cafe\u0301 A\u030a" is the NFD form of "caf\u00e9 \u00c5".
  EXPECT_EQ(tok.Encode("cafe\xcc\x81 A\xcc\x8a"), tok.Encode("caf\xc3\xa9 \xc3\x85"));
  EXPECT_NE(tok.Encode("cafe\xcc\x81"), tok.Encode("cafe"));
}

TEST(TokenizerTest, NonNfcModelsDoNotNormalize) {
  const Tokenizer& tok = Load("deepseek_v3");
  EXPECT_NE(tok.Encode("cafe\xcc\x81"), tok.Encode("caf\xc3\xa9"));
  auto back = tok.Decode(tok.Encode("cafe\xcc\x81"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "cafe\xcc\x81");
}

TEST(TokenizerTest, LlamaJsonInvalidUtf8InputFallsBackToBytes) {
  // "\xC3\x28" is not UTF-8 (0x28 is no continuation byte): each byte is its own <0xNN>
  // token, never the "è" a lax decoder would read.
  const auto tok = LlamaStyleTokenizer();
  EXPECT_EQ(tok->Encode("Hi\xC3\x28"), (std::vector<int32_t>{263, 3 + 0xC3, 3 + 0x28}));
  EXPECT_EQ(tok->Encode("Hi\xC3\xA8"), (std::vector<int32_t>{263, 264}));
}

TEST(TokenizerTest, InvalidUtf8BytesDecodeAsReplacementCharacters) {
  // Encoded byte by byte; decoded like `tokenizers` (from_utf8_lossy): one U+FFFD per maximal
  // invalid subpart ("\xe4\xbd" is one subpart).
  const Tokenizer& tok = Qwen3();
  const std::string s = std::string("ok \xff\xfe bytes \xe4\xbd") + " tail";
  const std::vector<int32_t> ids = tok.Encode(s);
  EXPECT_FALSE(ids.empty());
  auto back = tok.Decode(ids);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "ok \uFFFD\uFFFD bytes \uFFFD tail");
}

TEST(TokenizerTest, LongWhitespaceAndRepeatRunsRoundTrip) {
  const Tokenizer& tok = Qwen3();
  for (const std::string& s : {std::string(5000, ' '), std::string(5001, 'a'),
                               std::string(3000, '\n') + "x", std::string(4097, '-')}) {
    const std::vector<int32_t> ids = tok.Encode(s);
    EXPECT_LT(ids.size(), s.size());
    auto back = tok.Decode(ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, s);
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

std::string TokDir(const char* name) { return testing::TestDataDir() + "/tokenizers/" + name; }

TEST(LoadTokenizerTest, PicksTheFormatAndReadsBosEos) {
  struct Want {
    const char* name;
    const char* format;
    std::optional<int32_t> bos, eos;
  };
  for (const Want& w : {Want{"qwen3", "tokenizer.json", std::nullopt, 151645},
                        Want{"deepseek_v3", "tokenizer.json", 0, 1},
                        Want{"gpt_oss", "tokenizer.json", 199998, 200002},
                        Want{"mistral_v1", "sentencepiece", 1, 2}}) {
    auto tok = LoadTokenizer(TokDir(w.name));
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_EQ((*tok)->format(), w.format) << w.name;
    EXPECT_EQ((*tok)->bos_id(), w.bos) << w.name;
    EXPECT_EQ((*tok)->eos_id(), w.eos) << w.name;
  }
}

TEST(LoadTokenizerTest, AcceptsAFilePath) {
  auto tok = LoadTokenizer(TokDir("mistral_v1") + "/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  EXPECT_EQ((*tok)->IdToToken(1), "<s>");
  EXPECT_TRUE((*tok)->IsSpecial(1));
  EXPECT_FALSE((*tok)->IsSpecial(100));
}

TEST(LoadTokenizerTest, FallsBackToSentencePieceForUnsupportedTokenizerJson) {
  const std::string dir = testing::MakeTempDir("tok_fallback");
  std::ofstream(dir + "/tokenizer.json")
      << R"({"model": {"type": "Unigram", "vocab": [["<unk>", 0.0]], "unk_id": 0}})";
  std::filesystem::copy_file(TokDir("mistral_v1") + "/tokenizer.model",
                             dir + "/tokenizer.model");
  auto tok = LoadTokenizer(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->format(), "sentencepiece");
  // Named explicitly, the tokenizer.json error is reported.
  auto json_only = LoadTokenizer(dir + "/tokenizer.json");
  ASSERT_FALSE(json_only.ok());
  EXPECT_THAT(std::string(json_only.status().message()), ::testing::HasSubstr("model.type"));
}

TEST(LoadTokenizerTest, MissingDirectoryErrorNamesIt) {
  auto tok = LoadTokenizer("/nonexistent/model");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), ::testing::HasSubstr("/nonexistent/model"));
}

TEST(LoadTokenizerTest, TokenToIdAndIdToTokenAreInverse) {
  for (const char* name : {"qwen3", "deepseek_v3", "gpt_oss", "mistral_v1"}) {
    auto tok = LoadTokenizer(TokDir(name));
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (int32_t id : {0, 1, 100, 1000, (*tok)->vocab_size() - 1}) {
      auto text = (*tok)->IdToToken(id);
      ASSERT_TRUE(text.has_value()) << name << " " << id;
      EXPECT_EQ((*tok)->TokenToId(*text), id) << name;
    }
    EXPECT_FALSE((*tok)->IdToToken((*tok)->vocab_size()).has_value());
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST(TokenizerConcurrencyTest, ConcurrentEncodeMatchesSingleThreaded) {
  // The API encodes from many threads at once; the piece cache is shared.
  auto tok = LoadTokenizer(testing::TestDataDir() + "/tokenizers/qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(absl::StrCat("request ", i, ": héllo wörld 你好 ", std::string(i % 7, ' '),
                                 "<|im_end|> x", i * 7919));
  }
  std::vector<std::vector<int32_t>> want;
  for (const std::string& t : texts) want.push_back((*tok)->Encode(t));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = th; i < texts.size(); i += 1 + th) {
          if ((*tok)->Encode(texts[i]) != want[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace tessera
