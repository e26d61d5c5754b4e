#include "kernels/base/flags.h"

#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

absl::Status ParseArgs(FlagParser& parser, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parser.Parse(static_cast<int>(argv.size()), argv.data());
}

TEST(FlagParser, ParsesBothSpellingsAndBooleans) {
  std::string model;
  int64_t n = 0;
  double t = 1.0;
  bool json = false;
  FlagParser p("generate", "test");
  p.AddString("model", &model, "dir");
  p.AddInt("max-tokens", &n, "n");
  p.AddDouble("temperature", &t, "t");
  p.AddBool("json", &json, "json");
  ASSERT_TRUE(ParseArgs(p, {"generate", "--model", "/m", "--max-tokens=7", "--temperature",
                            "0.5", "--json"}).ok());
  EXPECT_EQ(model, "/m");
  EXPECT_EQ(n, 7);
  EXPECT_EQ(t, 0.5);
  EXPECT_TRUE(json);
  EXPECT_TRUE(p.WasSet("model"));
}

TEST(FlagParser, ErrorsNameTheFlag) {
  int64_t n = 0;
  FlagParser p("generate", "test");
  p.AddInt("max-tokens", &n, "n");
  absl::Status s = ParseArgs(p, {"generate", "--max-tokens", "seven"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--max-tokens"), absl::string_view::npos);
  FlagParser q("generate", "test");
  s = ParseArgs(q, {"generate", "--bogus"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--bogus"), absl::string_view::npos);
}

TEST(FlagParser, HelpReturnsUsage) {
  FlagParser p("make-model", "writes a model");
  absl::Status s = ParseArgs(p, {"make-model", "--help"});
  EXPECT_TRUE(absl::IsCancelled(s));
  EXPECT_NE(s.message().find("usage: tessera make-model"), absl::string_view::npos);
}

}  // namespace
}  // namespace tessera
