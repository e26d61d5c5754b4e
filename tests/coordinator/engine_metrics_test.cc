// MetricsRegistry: Prometheus text exposition format (specs/prometheus/exposition_formats.md).
#include "coordinator/engine/metrics.h"

#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, RendersCounterAndGauge) {
  MetricsRegistry r;
  r.AddCounter("app:requests_total", "Requests.", {"model_name"})->Labels({"m"})->Increment(3);
  r.AddGauge("app:running", "Running now.")->Labels({})->Set(2.5);
  EXPECT_EQ(r.Render(),
            "# HELP app:requests_total Requests.\n"
            "# TYPE app:requests_total counter\n"
            "app:requests_total{model_name=\"m\"} 3\n"
            "# HELP app:running Running now.\n"
            "# TYPE app:running gauge\n"
            "app:running 2.5\n");
}

TEST(Metrics, RendersHistogramCumulativeBuckets) {
  MetricsRegistry r;
  Histogram* h = r.AddHistogram("lat_seconds", "Latency.", {0.1, 1}, {"m"})->Labels({"x"});
  h->Observe(0.05);
  h->Observe(0.1);  // le is inclusive
  h->Observe(0.5);
  h->Observe(7);
  EXPECT_EQ(r.Render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{m=\"x\",le=\"0.10000000000000001\"} 2\n"
            "lat_seconds_bucket{m=\"x\",le=\"1\"} 3\n"
            "lat_seconds_bucket{m=\"x\",le=\"+Inf\"} 4\n"
            "lat_seconds_sum{m=\"x\"} 7.6500000000000004\n"
            "lat_seconds_count{m=\"x\"} 4\n");
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  MetricsRegistry r;
  r.AddCounter("c_total", "a\\b\nc", {"l"})->Labels({"q\"x\\y\nz"})->Increment();
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP c_total a\\\\b\\nc\n"));
  EXPECT_THAT(text, HasSubstr("c_total{l=\"q\\\"x\\\\y\\nz\"} 1\n"));
}

TEST(Metrics, RegisteringTwiceReturnsTheSameFamily) {
  MetricsRegistry r;
  CounterFamily* a = r.AddCounter("x_total", "X.", {"m"});
  CounterFamily* b = r.AddCounter("x_total", "X.", {"m"});
  EXPECT_EQ(a, b);
  EXPECT_EQ(a->Labels({"1"}), b->Labels({"1"}));
  EXPECT_NE(a->Labels({"1"}), a->Labels({"2"}));
}

TEST(Metrics, SpecialValues) {
  EXPECT_EQ(FormatMetricValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatMetricValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatMetricValue(0.0 / 0.0), "NaN");
  EXPECT_EQ(FormatMetricValue(42), "42");
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  MetricsRegistry r;
  Counter* c = r.AddCounter("n_total", "N.")->Labels({});
  Histogram* h = r.AddHistogram("h", "H.", {1})->Labels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Increment();
        h->Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), 40000);
  EXPECT_EQ(h->snapshot().count, 40000u);
}

// Every line of a rendering parses as the text format: comments, or `name{labels} value`.
TEST(Metrics, EveryLineParses) {
  MetricsRegistry r;
  r.AddCounter("a:b_total", "A.", {"x", "y"})->Labels({"1", "2"})->Increment(0.25);
  r.AddGauge("g", "G.", {"x"})->Labels({"\""})->Set(-3);
  r.AddHistogram("h_seconds", "H.", {0.5, 2.5})->Labels({})->Observe(1);
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? )"
      R"(([-+]?[0-9.eE+-]+|\+Inf|-Inf|NaN)$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
  std::istringstream in(r.Render());
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
    } else {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
      ++samples;
    }
  }
  EXPECT_EQ(samples, 2 + 3 + 2);
}

}  // namespace
}  // namespace tessera
