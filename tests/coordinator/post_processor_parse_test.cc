// ParsePostProcessor (coordinator/text/tokenizer.h): what tokenizer.json post-processors add with
// Encode's add_special_tokens, and the load errors naming the file, field and type. The ids
// against `tokenizers` itself are checked in post_processor_test.py.
#include <string>
#include <vector>

#include "coordinator/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/base/logging.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::tessera::testing::TestDataDir;

constexpr char kPath[] = "/models/x/tokenizer.json";

std::string BosTemplate(const std::string& bos_ids) {
  return R"({"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": )" +
         bos_ids + R"(, "tokens": ["<s>"]}}})";
}

// Applies `steps` to `ids` through a real tokenizer (the qwen3 file has no post-processor).
std::vector<int32_t> Apply(std::vector<Tokenizer::PostStep> steps, std::vector<int32_t> ids) {
  static auto* tok = [] {
    auto t = LoadTokenizer(TestDataDir() + "/tokenizers/qwen3");
    CHECK(t.ok()) << t.status();
    return t->release();
  }();
  tok->set_post_processor(std::move(steps));
  tok->ApplyPostProcessor(&ids);
  tok->set_post_processor({});
  return ids;
}

TEST(PostProcessorParseTest, NullAndByteLevelAddNothing) {
  for (const char* j : {"null", R"({"type": "ByteLevel", "trim_offsets": false})",
                        R"({"type": "Sequence", "processors": [{"type": "ByteLevel"}]})"}) {
    auto steps = ParsePostProcessor(kPath, j, 100);
    ASSERT_TRUE(steps.ok()) << steps.status();
    EXPECT_THAT(*steps, IsEmpty()) << j;
  }
}

TEST(PostProcessorParseTest, TemplatePrependsItsSpecialTokenIds) {
  auto steps = ParsePostProcessor(kPath, BosTemplate("[1, 7]"), 100);
  ASSERT_TRUE(steps.ok()) << steps.status();
  EXPECT_THAT(Apply(*steps, {5, 6}), ElementsAre(1, 7, 5, 6));
  EXPECT_THAT(Apply(*steps, {}), ElementsAre(1, 7));
}

TEST(PostProcessorParseTest, BertThenRobertaWrapEachSegment) {
  auto steps = ParsePostProcessor(kPath, R"({"type": "Sequence", "processors": [
      {"type": "BertProcessing", "cls": ["[CLS]", 10], "sep": ["[SEP]", 11]},
      {"type": "RobertaProcessing", "cls": ["<s>", 20], "sep": ["</s>", 21],
       "trim_offsets": true, "add_prefix_space": false}]})",
                                  100);
  ASSERT_TRUE(steps.ok()) << steps.status();
  EXPECT_THAT(Apply(*steps, {5}), ElementsAre(20, 10, 5, 11, 21));
}

TEST(PostProcessorParseTest, UnknownTypeIsRefusedNamingFileFieldAndType) {
  auto steps = ParsePostProcessor(
      kPath, R"({"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "Fancy"}]})",
      100);
  ASSERT_FALSE(steps.ok());
  EXPECT_THAT(steps.status().message(), HasSubstr(kPath));
  EXPECT_THAT(steps.status().message(), HasSubstr("post_processor.processors[1].type"));
  EXPECT_THAT(steps.status().message(), HasSubstr("'Fancy' is not supported"));
}

TEST(PostProcessorParseTest, SpecialTokenMissingFromTheMapIsRefused) {
  auto steps = ParsePostProcessor(kPath, R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<t>": {"id": "<t>", "ids": [1], "tokens": ["<t>"]}}})",
                                  100);
  ASSERT_FALSE(steps.ok());
  EXPECT_THAT(steps.status().message(), HasSubstr("post_processor.single[0]"));
  EXPECT_THAT(steps.status().message(), HasSubstr("'<s>'"));
}

TEST(PostProcessorParseTest, IdOutsideTheVocabularyIsRefused) {
  auto steps = ParsePostProcessor(kPath, BosTemplate("[100]"), 100);
  ASSERT_FALSE(steps.ok());
  EXPECT_THAT(steps.status().message(),
              HasSubstr("post_processor.special_tokens[\"<s>\"].ids[0]"));
  EXPECT_THAT(steps.status().message(), HasSubstr("[0, 100)"));
}

TEST(PostProcessorParseTest, SingleTemplateUsingSequenceBIsRefused) {
  std::string j = BosTemplate("[1]");
  j.replace(j.find(R"({"id": "A")"), 10, R"({"id": "B")");
  auto steps = ParsePostProcessor(kPath, j, 100);
  ASSERT_FALSE(steps.ok());
  EXPECT_THAT(steps.status().message(), HasSubstr("'post_processor.single'"));
  EXPECT_THAT(steps.status().message(), HasSubstr("sequence B"));
}

TEST(PostProcessorParseTest, MissingPairTemplateIsRefused) {
  auto steps = ParsePostProcessor(kPath, R"({"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}})",
                                  100);
  ASSERT_FALSE(steps.ok());
  EXPECT_THAT(steps.status().message(), HasSubstr("post_processor.pair"));
}

TEST(PostProcessorParseTest, EncodeAddsSpecialTokensOnlyWhenAsked) {
  auto tok = LoadTokenizer(TestDataDir() + "/tokenizers/qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto steps = ParsePostProcessor(kPath, BosTemplate("[151644]"), (*tok)->vocab_size());
  ASSERT_TRUE(steps.ok()) << steps.status();
  (*tok)->set_post_processor(*steps);
  const std::vector<int32_t> plain = (*tok)->Encode("Hello");
  std::vector<int32_t> with_bos = {151644};
  with_bos.insert(with_bos.end(), plain.begin(), plain.end());
  EXPECT_EQ((*tok)->Encode("Hello", true, /*add_special_tokens=*/true), with_bos);
  EXPECT_EQ((*tok)->Encode("Hello", true, /*add_special_tokens=*/false), plain);
}

}  // namespace
}  // namespace tessera
