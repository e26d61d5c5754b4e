// Output parsers (coordinator/text/output_parser.h): per format plain content, reasoning,
// reasoning + content, one / parallel tool calls, content before calls, malformed calls returned
// as content, unicode arguments; every case is also streamed at every split point and in 1-byte
// deltas and must equal the one-shot parse. Harmony cases use openai/harmony's test vectors.
#include "coordinator/text/output_parser.h"

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "coordinator/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::ElementsAre;
using ::testing::MatchesRegex;

struct Call {
  std::string name;
  std::string arguments;
};

struct Case {
  std::string name;
  OutputFormat format;
  std::string text;
  std::string content;
  std::string reasoning;
  std::vector<Call> calls;
  bool starts_in_reasoning = false;
  bool parse_tools = true;
  bool parse_reasoning = true;
  nlohmann::json tools = nullptr;
};

OutputParser::Options OptionsOf(const Case& c) {
  OutputParser::Options o;
  o.parse_tools = c.parse_tools;
  o.parse_reasoning = c.parse_reasoning;
  o.starts_in_reasoning = c.starts_in_reasoning;
  o.tools = c.tools;
  o.id_seed = 42;
  return o;
}

std::string Describe(const ParsedDelta& d) {
  nlohmann::json j;
  j["content"] = d.content;
  j["reasoning"] = d.reasoning_content;
  j["calls"] = nlohmann::json::array();
  for (const ToolCallDelta& c : d.tool_calls) {
    j["calls"].push_back({c.index, c.id, c.name, c.arguments});
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ParsedDelta Streamed(const Case& c, const std::vector<size_t>& cuts) {
  std::unique_ptr<OutputParser> p = OutputParser::Create(c.format, OptionsOf(c));
  ParsedDelta out;
  size_t prev = 0;
  for (size_t cut : cuts) {
    out.Append(p->Push(absl::string_view(c.text).substr(prev, cut - prev)));
    prev = cut;
  }
  out.Append(p->Push(absl::string_view(c.text).substr(prev)));
  out.Append(p->Finish());
  return out;
}

std::vector<Case> Cases() {
  const nlohmann::json weather_tools = nlohmann::json::parse(R"([{"type": "function", "function":
      {"name": "get_weather", "parameters": {"type": "object", "properties": {
       "city": {"type": "string"}, "zip": {"type": "string"}, "days": {"type": "integer"}}}}}])");
  std::vector<Case> cases = {
      // ---- Qwen3 / QwQ / Qwen2.5 (hermes) ----
      {"qwen3_plain", OutputFormat::kQwen3, "Hello, world!\nBye.", "Hello, world!\nBye.", "", {}},
      {"qwen3_reasoning_only", OutputFormat::kQwen3, "<think>\nLet me think.\n</think>", "",
       "Let me think.", {}},
      {"qwen3_reasoning_content", OutputFormat::kQwen3,
       "<think>\nStep 1.\n\nStep 2.\n</think>\n\nThe answer is 4.", "The answer is 4.",
       "Step 1.\n\nStep 2.", {}},
      {"qwen3_empty_think", OutputFormat::kQwen3, "<think>\n\n</think>\n\nHi", "Hi", "", {}},
      {"qwq_starts_in_reasoning", OutputFormat::kQwen3, "Hmm, 2+2.\n</think>\n\n4", "4",
       "Hmm, 2+2.", {}, /*starts_in_reasoning=*/true},
      {"qwen3_unterminated_reasoning", OutputFormat::kQwen3, "<think>\nStill thinking\n", "",
       "Still thinking", {}},
      {"qwen3_one_call", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
       "\"days\": 3}}\n</tool_call>",
       "", "", {{"get_weather", R"({"city":"Paris","days":3})"}}},
      {"qwen3_parallel_calls", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n"
       "{\"name\": \"b\", \"arguments\": {\"y\": [1, 2]}}\n</tool_call>",
       "", "", {{"a", R"({"x":1})"}, {"b", R"({"y":[1,2]})"}}},
      {"qwen3_content_before_call", OutputFormat::kQwen3,
       "<think>\nNeed weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": "
       "\"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
       "Let me check.", "Need weather.", {{"get_weather", R"({"city":"Oslo"})"}}},
      {"qwen3_malformed_json", OutputFormat::kQwen3,
       "Try:\n<tool_call>\n{\"name\": \"f\", \"arguments\": {bad}}\n</tool_call>",
       "Try:\n<tool_call>\n{\"name\": \"f\", \"arguments\": {bad}}\n</tool_call>", "", {}},
      {"qwen3_malformed_then_valid", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": 3}\n</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": "
       "{}}\n</tool_call>",
       "<tool_call>\n{\"name\": 3}\n</tool_call>", "", {{"g", "{}"}}},
      {"qwen3_unicode_args", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich 東京 🌧\", "
       "\"q\": \"\\u00e9\\\"\"}}\n</tool_call>",
       "", "", {{"get_weather", "{\"city\":\"Zürich 東京 🌧\",\"q\":\"é\\\"\"}"}}},
      {"qwen3_unterminated_valid_call", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": true}}\n", "", "",
       {{"f", R"({"a":true})"}}},
      {"qwen3_unterminated_invalid_call", OutputFormat::kQwen3,
       "ok <tool_call>\n{\"name\": \"f\", \"argu", "ok <tool_call>\n{\"name\": \"f\", \"argu", "",
       {}},
      {"qwen3_tools_disabled", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
       "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "", {}, false,
       /*parse_tools=*/false},
      {"qwen3_reasoning_disabled", OutputFormat::kQwen3, "<think>\nx\n</think>\n\ny",
       "<think>\nx\n</think>\n\ny", "", {}, false, true, /*parse_reasoning=*/false},
      {"qwen3_string_arguments", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}\n</tool_call>", "", "",
       {{"f", R"({"a":1})"}}},
      {"qwen3_non_object_arguments", OutputFormat::kQwen3,
       "<tool_call>\n{\"name\": \"f\", \"arguments\": [1]}\n</tool_call>",
       "<tool_call>\n{\"name\": \"f\", \"arguments\": [1]}\n</tool_call>", "", {}},
      {"qwen3_lookalike_markers", OutputFormat::kQwen3, "a <tool_ b </think c <think>",
       "a <tool_ b </think c <think>", "", {}},
      // ---- DeepSeek-V3 / R1 ----
      {"deepseek_v3_plain", OutputFormat::kDeepSeekV3, "Just text.", "Just text.", "", {}},
      {"deepseek_r1_reasoning_content", OutputFormat::kDeepSeekV3,
       "Okay, the user wants 2+2.\n</think>\n\n**4**", "**4**", "Okay, the user wants 2+2.", {},
       /*starts_in_reasoning=*/true},
      {"deepseek_r1_repeated_think_tag", OutputFormat::kDeepSeekV3,
       "<think>\nOkay.\n</think>\n\nHi", "Hi", "Okay.", {}, true},
      {"deepseek_r1_reasoning_only", OutputFormat::kDeepSeekV3, "Thinking...", "", "Thinking...",
       {}, true},
      {"deepseek_v3_one_call", OutputFormat::kDeepSeekV3,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
       "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       "", "", {{"get_weather", R"({"city":"Paris"})"}}},
      {"deepseek_v3_parallel_calls_content_before", OutputFormat::kDeepSeekV3,
       "Checking both.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json"
       "\n{\"x\": 1}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json"
       "\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       "Checking both.", "", {{"a", R"({"x":1})"}, {"b", "{}"}}},
      {"deepseek_v3_calls_end_missing", OutputFormat::kDeepSeekV3,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{\"k\": "
       "\"日本\"}\n```<｜tool▁call▁end｜>",
       "", "", {{"a", R"({"k":"日本"})"}}},
      {"deepseek_v3_malformed", OutputFormat::kDeepSeekV3,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{x}\n```"
       "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{x}\n```"
       "<｜tool▁call▁end｜>",
       "", {}},
      // ---- DeepSeek-V3.1 ----
      {"deepseek_v31_reasoning_content", OutputFormat::kDeepSeekV31,
       "I should greet.</think>Hello!", "Hello!", "I should greet.", {}, true},
      {"deepseek_v31_one_call", OutputFormat::kDeepSeekV31,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": "
       "\"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       "", "", {{"get_weather", R"({"city":"Paris"})"}}},
      {"deepseek_v31_parallel_unicode", OutputFormat::kDeepSeekV31,
       "Sure<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{\"t\": \"ñ—😀\"}"
       "<｜tool▁call▁end｜><｜tool▁call▁begin｜>b<｜tool▁sep｜>{\"n\": -1.5e3}<｜tool▁call▁end｜>"
       "<｜tool▁calls▁end｜>",
       "Sure", "", {{"a", R"({"t":"ñ—😀"})"}, {"b", R"({"n":-1500.0})"}}},
      {"deepseek_v31_malformed_keeps_good_one", OutputFormat::kDeepSeekV31,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{\"x\": }<｜tool▁call▁end｜>"
       "<｜tool▁call▁begin｜>b<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{\"x\": }<｜tool▁call▁end｜>", "",
       {{"b", "{}"}}},
      // ---- Kimi K2 ----
      {"kimi_plain", OutputFormat::kKimiK2, "Hi there", "Hi there", "", {}},
      {"kimi_thinking_reasoning_content", OutputFormat::kKimiK2, "<think>plan</think>answer",
       "answer", "plan", {}},
      {"kimi_parallel_calls", OutputFormat::kKimiK2,
       "Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
       "<|tool_call_argument_begin|>{\"city\": \"北京\"}<|tool_call_end|><|tool_call_begin|>"
       "functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|>"
       "<|tool_calls_section_end|>",
       "Let me look.", "", {{"get_weather", R"({"city":"北京"})"}, {"get_time", "{}"}}},
      {"kimi_malformed", OutputFormat::kKimiK2,
       "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>"
       "{oops<|tool_call_end|><|tool_calls_section_end|>",
       "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0"
       "<|tool_call_argument_begin|>{oops<|tool_call_end|>",
       "", {}},
      // ---- GLM-4.5 / 4.6 ----
      {"glm_reasoning_content", OutputFormat::kGlm45, "\n<think>Think.</think>\nAnswer.",
       "Answer.", "Think.", {}},
      {"glm_disabled_thinking", OutputFormat::kGlm45, "\n<think></think>\nAnswer.", "Answer.", "",
       {}},
      {"glm_one_call_typed_values", OutputFormat::kGlm45,
       "<think>w</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
       "</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>opts"
       "</arg_key>\n<arg_value>{\"unit\": \"C\"}</arg_value>\n</tool_call>",
       "", "w", {{"get_weather", R"({"city":"Paris","days":3,"opts":{"unit":"C"}})"}}},
      {"glm_schema_string_param", OutputFormat::kGlm45,
       "<tool_call>get_weather\n<arg_key>zip</arg_key>\n<arg_value>01234</arg_value>\n<arg_key>"
       "days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",
       "", "", {{"get_weather", R"({"zip":"01234","days":2})"}}, false, true, true,
       weather_tools},
      {"glm_parallel_content_before_unicode", OutputFormat::kGlm45,
       "\n<think></think>\nOn it.\n<tool_call>a\n<arg_key>q</arg_key>\n<arg_value>café ☕"
       "</arg_value>\n</tool_call>\n<tool_call>b\n</tool_call>",
       "On it.", "", {{"a", R"({"q":"café ☕"})"}, {"b", "{}"}}},
      {"glm_malformed", OutputFormat::kGlm45,
       "<tool_call>f\n<arg_key>x</arg_key>\n</tool_call>",
       "<tool_call>f\n<arg_key>x</arg_key>\n</tool_call>", "", {}},
      // ---- gpt-oss (harmony) ----
      {"gpt_oss_final_only", OutputFormat::kGptOss, "<|channel|>final<|message|>Hello!",
       "Hello!", "", {}},
      {"gpt_oss_reasoning_only", OutputFormat::kGptOss,
       "<|channel|>analysis<|message|>Hmm.<|end|>", "", "Hmm.", {}},
      {"gpt_oss_reasoning_content", OutputFormat::kGptOss,
       "<|channel|>analysis<|message|>2+2 is 4.<|end|><|start|>assistant<|channel|>final"
       "<|message|>4<|return|>",
       "4", "2+2 is 4.", {}},
      {"gpt_oss_tool_call_recipient_after_channel", OutputFormat::kGptOss,
       "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary"
       " to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"東京\"}<|call|>",
       "", "Need weather.", {{"get_weather", R"({"city":"東京"})"}}},
      {"gpt_oss_tool_call_recipient_in_header", OutputFormat::kGptOss,
       " to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Oslo\"}"
       "<|call|>",
       "", "", {{"get_weather", R"({"city":"Oslo"})"}}},
      {"gpt_oss_preamble_then_call", OutputFormat::kGptOss,
       "<|channel|>commentary<|message|>Checking the weather.<|end|><|start|>assistant to="
       "functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{}<|call|>",
       "Checking the weather.", "", {{"get_weather", "{}"}}},
      {"gpt_oss_malformed_call", OutputFormat::kGptOss,
       "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": <|call|>",
       "{\"a\": ", "", {}},
      {"gpt_oss_call_without_end_token", OutputFormat::kGptOss,
       "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}", "", "",
       {{"f", R"({"a":1})"}}},
      // ---- Mistral ----
      {"mistral_plain", OutputFormat::kMistral, "Bonjour !", "Bonjour !", "", {}},
      {"mistral_array_parallel", OutputFormat::kMistral,
       "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": \"é]\"}}, {\"name\": \"b\", "
       "\"arguments\": {}}]",
       "", "", {{"a", R"({"x":"é]"})"}, {"b", "{}"}}},
      {"mistral_v11_calls", OutputFormat::kMistral,
       "Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[CALL_ID]"
       "abcDEF123[ARGS]{}",
       "Sure.", "", {{"get_weather", R"({"city":"Paris"})"}, {"get_time", "{}"}}},
      {"mistral_malformed", OutputFormat::kMistral, "[TOOL_CALLS]f[ARGS]{\"x\": nope}",
       "[TOOL_CALLS]f[ARGS]{\"x\": nope}", "", {}},
      // ---- plain ----
      {"plain_passthrough", OutputFormat::kPlain, "<think>x</think><tool_call>{}</tool_call>",
       "<think>x</think><tool_call>{}</tool_call>", "", {}},
  };
  return cases;
}

class OutputParserCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(OutputParserCaseTest, OneShotParse) {
  const Case& c = GetParam();
  ParsedDelta d = OutputParser::Parse(c.format, OptionsOf(c), c.text);
  EXPECT_EQ(d.content, c.content);
  EXPECT_EQ(d.reasoning_content, c.reasoning);
  ASSERT_EQ(d.tool_calls.size(), c.calls.size()) << Describe(d);
  for (size_t i = 0; i < c.calls.size(); ++i) {
    EXPECT_EQ(d.tool_calls[i].index, static_cast<int>(i));
    EXPECT_EQ(d.tool_calls[i].name, c.calls[i].name);
    EXPECT_EQ(d.tool_calls[i].arguments, c.calls[i].arguments);
    EXPECT_FALSE(d.tool_calls[i].id.empty());
  }
}

TEST_P(OutputParserCaseTest, EverySplitPointEqualsOneShot) {
  const Case& c = GetParam();
  const std::string expected = Describe(OutputParser::Parse(c.format, OptionsOf(c), c.text));
  for (size_t cut = 0; cut <= c.text.size(); ++cut) {
    ASSERT_EQ(Describe(Streamed(c, {cut})), expected) << "split at byte " << cut;
  }
}

TEST_P(OutputParserCaseTest, OneByteDeltasEqualOneShot) {
  const Case& c = GetParam();
  std::vector<size_t> cuts;
  for (size_t i = 1; i < c.text.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(Describe(Streamed(c, cuts)),
            Describe(OutputParser::Parse(c.format, OptionsOf(c), c.text)));
}

TEST_P(OutputParserCaseTest, EveryTwoSplitPointsEqualOneShot) {
  const Case& c = GetParam();
  // Quadratic: every first cut, second cuts strided so that long cases stay fast.
  const size_t stride = 1 + c.text.size() / 64;
  const std::string expected = Describe(OutputParser::Parse(c.format, OptionsOf(c), c.text));
  for (size_t a = 1; a < c.text.size(); ++a) {
    for (size_t b = a; b < c.text.size(); b += stride) {
      ASSERT_EQ(Describe(Streamed(c, {a, b})), expected) << "splits at " << a << ", " << b;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, OutputParserCaseTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

OutputParser::Options ToolOptions() {
  OutputParser::Options o;
  o.parse_tools = true;
  return o;
}

// Random texts built from the format's markers, fragments of them and ordinary text, streamed
// in random deltas: the result must equal the one-shot parse (the state machines may only
// change state on complete markers).
struct FuzzFormat {
  std::string name;
  OutputFormat format;
  std::vector<std::string> pieces;
};

class OutputParserFuzzTest : public ::testing::TestWithParam<FuzzFormat> {};

TEST_P(OutputParserFuzzTest, RandomDeltasEqualOneShot) {
  const FuzzFormat& f = GetParam();
  std::vector<std::string> pieces = f.pieces;
  for (const char* common : {"a", "b c", "\n", "\n\n", " ", "{", "}", "\"", "é", "東", "<",
                             "<|", "[", "<think>", "</think>", "{\"name\": \"f\"}",
                             "{\"x\": [1, \"]}\"]}"}) {
    pieces.push_back(common);
  }
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 2000; ++iter) {
    Case c{"fuzz", f.format, "", "", "", {}};
    c.starts_in_reasoning = rng() % 4 == 0;
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) c.text += pieces[rng() % pieces.size()];
    std::vector<size_t> cuts;
    for (size_t pos = 0; pos < c.text.size();) {
      pos += 1 + rng() % 7;
      if (pos < c.text.size()) cuts.push_back(pos);
    }
    ASSERT_EQ(Describe(Streamed(c, cuts)),
              Describe(OutputParser::Parse(c.format, OptionsOf(c), c.text)))
        << "text: " << c.text;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, OutputParserFuzzTest,
    ::testing::Values(
        FuzzFormat{"qwen3", OutputFormat::kQwen3, {"<tool_call>", "</tool_call>", "<tool_"}},
        FuzzFormat{"deepseek_v3", OutputFormat::kDeepSeekV3,
                   {"<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>",
                    "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>", "function", "\n```json\n",
                    "\n```", "<｜tool▁"}},
        FuzzFormat{"kimi_k2", OutputFormat::kKimiK2,
                   {"<|tool_calls_section_begin|>", "<|tool_call_begin|>", "functions.f:0",
                    "<|tool_call_argument_begin|>", "<|tool_call_end|>",
                    "<|tool_calls_section_end|>", "<|tool_"}},
        FuzzFormat{"glm45", OutputFormat::kGlm45,
                   {"<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>",
                    "</arg_value>", "f\n"}},
        FuzzFormat{"gpt_oss", OutputFormat::kGptOss,
                   {"<|channel|>", "analysis", "final", "commentary", " to=functions.f",
                    " to=browser.search", "<|constrain|>json", "<|message|>", "<|end|>",
                    "<|call|>", "<|return|>", "<|start|>assistant", "<|start|>"}},
        FuzzFormat{"mistral", OutputFormat::kMistral,
                   {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "abc123XYZ", "[{\"name\": \"g\"}]",
                    "[TOOL_"}}),
    [](const ::testing::TestParamInfo<FuzzFormat>& info) { return info.param.name; });

TEST(OutputParserStreamingTest, ContentIsNotHeldBackWithoutAPossibleMarker) {
  auto p = OutputParser::Create(OutputFormat::kQwen3, ToolOptions());
  EXPECT_EQ(p->Push("Hello wor").content, "Hello wor");
  EXPECT_EQ(p->Push("ld <tool").content, "ld ");  // "<tool" may become "<tool_call>"
  EXPECT_EQ(p->Push("s> are").content, "<tools> are");
}

TEST(OutputParserStreamingTest, ReasoningStreamsBeforeTheEndMarker) {
  auto p = OutputParser::Create(OutputFormat::kQwen3, ToolOptions());
  ParsedDelta d = p->Push("<think>\nFirst idea");
  EXPECT_EQ(d.reasoning_content, "First idea");
  d = p->Push(" and more</th");
  EXPECT_EQ(d.reasoning_content, " and more");
  d = p->Push("ink>\n\nDone");
  EXPECT_EQ(d.reasoning_content, "");
  EXPECT_EQ(d.content, "Done");
}

TEST(OutputParserStreamingTest, ToolCallIsEmittedWholeAtItsEndMarker) {
  auto p = OutputParser::Create(OutputFormat::kQwen3, ToolOptions());
  EXPECT_TRUE(p->Push("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\"").empty());
  EXPECT_TRUE(p->Push(": 1}}\n</tool_").empty());
  ParsedDelta d = p->Push("call>");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "f");
  EXPECT_EQ(d.tool_calls[0].arguments, R"({"a":1})");
  EXPECT_TRUE(p->Finish().empty());
}

TEST(OutputParserStreamingTest, PushAfterFinishIsIgnored) {
  auto p = OutputParser::Create(OutputFormat::kQwen3, ToolOptions());
  p->Push("abc");
  p->Finish();
  EXPECT_TRUE(p->Push("more").empty());
  EXPECT_TRUE(p->Finish().empty());
}

TEST(OutputParserIdTest, HermesIdsAreCallPlus24Alphanumerics) {
  OutputParser::Options o = ToolOptions();
  ParsedDelta d = OutputParser::Parse(
      OutputFormat::kQwen3, o,
      "<tool_call>{\"name\": \"a\"}</tool_call><tool_call>{\"name\": \"b\"}</tool_call>");
  ASSERT_EQ(d.tool_calls.size(), 2u);
  EXPECT_THAT(d.tool_calls[0].id, MatchesRegex("call_[A-Za-z0-9]{24}"));
  EXPECT_NE(d.tool_calls[0].id, d.tool_calls[1].id);
}

TEST(OutputParserIdTest, KimiIdsComeFromTheText) {
  ParsedDelta d = OutputParser::Parse(
      OutputFormat::kKimiK2, ToolOptions(),
      "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
      "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].id, "functions.get_weather:0");
}

TEST(OutputParserIdTest, MistralIdsAreNineAlphanumericsOrFromTheText) {
  ParsedDelta d = OutputParser::Parse(OutputFormat::kMistral, ToolOptions(),
                                      "[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[CALL_ID]Xy9Xy9Xy9[ARGS]{}");
  ASSERT_EQ(d.tool_calls.size(), 2u);
  EXPECT_THAT(d.tool_calls[0].id, MatchesRegex("[A-Za-z0-9]{9}"));
  EXPECT_EQ(d.tool_calls[1].id, "Xy9Xy9Xy9");
}

TEST(OutputParserIdTest, UnseededIdsDifferBetweenParsers) {
  const char* text = "<tool_call>{\"name\": \"a\"}</tool_call>";
  ParsedDelta a = OutputParser::Parse(OutputFormat::kQwen3, ToolOptions(), text);
  ParsedDelta b = OutputParser::Parse(OutputFormat::kQwen3, ToolOptions(), text);
  ASSERT_EQ(a.tool_calls.size(), 1u);
  ASSERT_EQ(b.tool_calls.size(), 1u);
  EXPECT_NE(a.tool_calls[0].id, b.tool_calls[0].id);
}

std::string ReadTestFile(const std::string& rel) {
  std::ifstream in(testing::TestDataDir() + "/" + rel, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Harmony vectors stored as token ids (openai/harmony test-data), decoded with the real
// gpt-oss tokenizer keeping special tokens.
std::string DecodeHarmonyIds(const std::string& rel) {
  static auto* const tok = new absl::StatusOr<std::unique_ptr<Tokenizer>>(
      Tokenizer::FromFile(testing::TestDataDir() + "/tokenizers/gpt_oss/tokenizer.json"));
  EXPECT_TRUE(tok->ok()) << tok->status();
  if (!tok->ok()) return "";
  std::vector<int32_t> ids;
  std::istringstream in(ReadTestFile(rel));
  int32_t id;
  while (in >> id) ids.push_back(id);
  EXPECT_FALSE(ids.empty()) << rel;
  auto text = (**tok)->Decode(ids, /*skip_special_tokens=*/false);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

OutputParser::Options HarmonyOptions() {
  OutputParser::Options o;
  o.parse_tools = true;
  o.id_seed = 7;
  return o;
}

void ExpectStreamingMatches(OutputFormat f, const std::string& text) {
  Case c{"vector", f, text, "", "", {}};
  c.tools = nullptr;
  const std::string expected = Describe(OutputParser::Parse(f, OptionsOf(c), text));
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    ASSERT_EQ(Describe(Streamed(c, {cut})), expected) << "split at " << cut;
  }
}

TEST(HarmonyVectorTest, SimpleToolCall) {
  const std::string text = DecodeHarmonyIds("harmony/test_simple_tool_call.txt");
  ParsedDelta d = OutputParser::Parse(OutputFormat::kGptOss, HarmonyOptions(), text);
  EXPECT_EQ(d.reasoning_content,
            "User asks: \"What is the weather in Tokyo?\" We need to use lookup_weather tool.");
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "lookup_weather");
  EXPECT_EQ(d.tool_calls[0].arguments, R"({"location":"Tokyo"})");
  ExpectStreamingMatches(OutputFormat::kGptOss, text);
}

TEST(HarmonyVectorTest, SimpleReasoningResponse) {
  const std::string text = DecodeHarmonyIds("harmony/test_simple_reasoning_response.txt");
  ParsedDelta d = OutputParser::Parse(OutputFormat::kGptOss, HarmonyOptions(), text);
  EXPECT_EQ(d.reasoning_content,
            "User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.");
  EXPECT_EQ(d.content, "2 + 2 = 4.");
  EXPECT_TRUE(d.tool_calls.empty());
  ExpectStreamingMatches(OutputFormat::kGptOss, text);
}

TEST(HarmonyVectorTest, StreamableParserBuiltinToolIsReasoning) {
  const std::string text = ReadTestFile("harmony/test_streamable_parser.txt");
  ASSERT_FALSE(text.empty());
  ParsedDelta d = OutputParser::Parse(OutputFormat::kGptOss, HarmonyOptions(), text);
  // analysis, then a browser.search call (built-in, not a client tool), then its output.
  EXPECT_TRUE(absl::StartsWith(d.reasoning_content, "User asks \"Who is the current US"));
  EXPECT_TRUE(absl::StrContains(d.reasoning_content,
                                R"({"query": "current US president July 2025")"));
  EXPECT_EQ(d.content, "");
  EXPECT_TRUE(d.tool_calls.empty());
  ExpectStreamingMatches(OutputFormat::kGptOss, text);
}

TEST(HarmonyVectorTest, ToolResponseMessageIsNotContent) {
  const std::string text = ReadTestFile("harmony/test_tool_response_parsing.txt");
  ParsedDelta d = OutputParser::Parse(OutputFormat::kGptOss, HarmonyOptions(), text);
  EXPECT_EQ(d.content, "");
  EXPECT_TRUE(absl::StrContains(d.reasoning_content, R"({"result": "https://openai.com/"})"));
  EXPECT_TRUE(d.tool_calls.empty());
}

TEST(HarmonyVectorTest, AssistantTurnOfOngoingAnalysisConversation) {
  // The assistant's part after the last user message: analysis, then a function call.
  const std::string all = ReadTestFile("harmony/test_does_not_drop_if_ongoing_analysis.txt");
  const std::string user_end = "What is the weather in SF?<|end|><|start|>assistant";
  const size_t pos = all.rfind(user_end);
  ASSERT_NE(pos, std::string::npos);
  std::string text = all.substr(pos + user_end.size());
  text = text.substr(0, text.find("<|call|>") + 8);
  ParsedDelta d = OutputParser::Parse(OutputFormat::kGptOss, HarmonyOptions(), text);
  EXPECT_EQ(d.reasoning_content,
            "User asks: “What is the weather in SF?” We need to use lookup_weather tool.");
  ASSERT_EQ(d.tool_calls.size(), 1u);
  EXPECT_EQ(d.tool_calls[0].name, "lookup_weather");
  EXPECT_EQ(d.tool_calls[0].arguments, R"({"location":"San Francisco"})");
  ExpectStreamingMatches(OutputFormat::kGptOss, text);
}

TEST(OutputFormatTest, DetectedFromEachRealTemplate) {
  const std::vector<std::pair<std::string, OutputFormat>> expected = {
      {"Qwen-Qwen3-0.6B.jinja", OutputFormat::kQwen3},
      {"Qwen-QwQ-32B.jinja", OutputFormat::kQwen3},
      {"Qwen-Qwen2.5-7B-Instruct.jinja", OutputFormat::kQwen3},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", OutputFormat::kDeepSeekV3},
      {"deepseek-ai-DeepSeek-V3.1.jinja", OutputFormat::kDeepSeekV31},
      {"moonshotai-Kimi-K2.jinja", OutputFormat::kKimiK2},
      {"Kimi-K2-Thinking.jinja", OutputFormat::kKimiK2},
      {"GLM-4.6.jinja", OutputFormat::kGlm45},
      {"glm_4_5.jinja", OutputFormat::kGlm45},
      {"openai-gpt-oss-120b.jinja", OutputFormat::kGptOss},
      {"Mistral-Small-3.2-24B-Instruct-2506.jinja", OutputFormat::kMistral},
  };
  for (const auto& [file, format] : expected) {
    const std::string tmpl = ReadTestFile("chat_templates/" + file);
    ASSERT_FALSE(tmpl.empty()) << file;
    absl::StatusOr<OutputFormat> f = OutputFormatFor("", tmpl);
    ASSERT_TRUE(f.ok()) << file << ": " << f.status();
    EXPECT_EQ(OutputFormatName(*f), OutputFormatName(format)) << file;
  }
}

TEST(OutputFormatTest, FallsBackToModelType) {
  EXPECT_EQ(*OutputFormatFor("qwen3_moe", ""), OutputFormat::kQwen3);
  EXPECT_EQ(*OutputFormatFor("deepseek_v3", "{{ messages }}"), OutputFormat::kDeepSeekV3);
  EXPECT_EQ(*OutputFormatFor("kimi_k2", ""), OutputFormat::kKimiK2);
  EXPECT_EQ(*OutputFormatFor("glm4_moe", ""), OutputFormat::kGlm45);
  EXPECT_EQ(*OutputFormatFor("gpt_oss", ""), OutputFormat::kGptOss);
  EXPECT_EQ(*OutputFormatFor("mixtral", ""), OutputFormat::kMistral);
}

TEST(OutputFormatTest, UnknownModelIsAnErrorNamingIt) {
  absl::StatusOr<OutputFormat> f = OutputFormatFor("llama", "{{ messages }}");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::StrContains(f.status().message(), "llama"));
}

TEST(OutputFormatTest, NamesAndAliasesParse) {
  EXPECT_EQ(*ParseOutputFormat("hermes"), OutputFormat::kQwen3);
  EXPECT_EQ(*ParseOutputFormat("deepseek_r1"), OutputFormat::kDeepSeekV3);
  EXPECT_EQ(*ParseOutputFormat("DeepSeek_V31"), OutputFormat::kDeepSeekV31);
  EXPECT_EQ(*ParseOutputFormat("openai"), OutputFormat::kGptOss);
  for (OutputFormat f : {OutputFormat::kQwen3, OutputFormat::kDeepSeekV3,
                         OutputFormat::kDeepSeekV31, OutputFormat::kKimiK2, OutputFormat::kGlm45,
                         OutputFormat::kGptOss, OutputFormat::kMistral, OutputFormat::kPlain}) {
    EXPECT_EQ(*ParseOutputFormat(OutputFormatName(f)), f);
  }
  absl::StatusOr<OutputFormat> bad = ParseOutputFormat("llama3_json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "llama3_json"));
}

TEST(OutputFormatTest, PromptEndsInReasoning) {
  EXPECT_TRUE(PromptEndsInReasoning(OutputFormat::kQwen3, "<|im_start|>assistant\n<think>\n"));
  EXPECT_TRUE(PromptEndsInReasoning(OutputFormat::kDeepSeekV31, "<｜Assistant｜><think>"));
  EXPECT_FALSE(PromptEndsInReasoning(OutputFormat::kDeepSeekV31, "<｜Assistant｜></think>"));
  EXPECT_FALSE(PromptEndsInReasoning(OutputFormat::kQwen3,
                                     "<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(PromptEndsInReasoning(OutputFormat::kGptOss, "<think>"));
}

TEST(ToolArgumentsTest, NormalizeCompactsAndKeepsKeyOrder) {
  EXPECT_EQ(*NormalizeToolArguments(" {\"b\": 1, \"a\": [1, 2], \"c\": {\"d\": null}} "),
            R"({"b":1,"a":[1,2],"c":{"d":null}})");
  EXPECT_EQ(*NormalizeToolArguments(""), "{}");
  EXPECT_EQ(*NormalizeToolArguments("null"), "{}");
  EXPECT_FALSE(NormalizeToolArguments("[1]").ok());
  EXPECT_FALSE(NormalizeToolArguments("{\"a\": }").ok());
}

TEST(ToolArgumentsTest, ScanJsonValueEndHonoursStrings) {
  EXPECT_EQ(ScanJsonValueEnd(R"( {"a": "}]\"{"} tail)"), 15u);
  EXPECT_EQ(ScanJsonValueEnd(R"([{"a": 1}, {"b": [2]}])"), 22u);
  EXPECT_FALSE(ScanJsonValueEnd(R"({"a": "}")").has_value());
  EXPECT_EQ(ScanJsonValueEnd("abc"), 0u);
}

}  // namespace
}  // namespace tessera
