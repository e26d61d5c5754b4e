// Metrics: a small Prometheus registry rendering the text exposition format (version 0.0.4).
//
// A MetricsRegistry holds metric families (counter, gauge, histogram), each with a fixed list of
// label names; a family hands out one child per tuple of label values. Render() writes every
// family as `# HELP`, `# TYPE` and its sample lines (histograms: cumulative `_bucket{le=...}`
// lines ending with `le="+Inf"`, then `_sum` and `_count`), label values and help text escaped as
// the format requires. Families are rendered in registration order, children in creation order.
// Registering an existing name again with the same type and label names returns the existing
// family (several engines may share one registry); a different type or label list is a
// programming error (CHECK).
//
// Thread safety: everything is thread safe. Children are never destroyed before the registry,
// so pointers returned by Labels() stay valid for the registry's lifetime.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace tessera {

class Counter {
 public:
  void Increment(double amount = 1.0);  // amount >= 0
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Cumulative counts per bound (the last one is +Inf), sum and count, read consistently.
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;  // sorted, finite
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is (bounds_.back(), +Inf)
  double sum_ = 0;
  uint64_t count_ = 0;
};

enum class MetricType { kCounter, kGauge, kHistogram };

// One metric name with its label names; children per label values.
template <typename T>
class MetricFamily {
 public:
  // The child for `label_values` (same count as the family's label names), created on first use.
  T* Labels(const std::vector<std::string>& label_values);
  // Number of children created so far.
  int num_children() const;

 private:
  friend class MetricsRegistry;
  MetricFamily(std::string name, std::string help, MetricType type,
               std::vector<std::string> label_names, std::vector<double> bounds)
      : name_(std::move(name)), help_(std::move(help)), type_(type),
        label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}
  void Render(std::string* out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::vector<std::pair<std::vector<std::string>, std::unique_ptr<T>>> children_;
  absl::flat_hash_map<std::string, T*> index_;  // joined label values -> child
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (CHECK).
  CounterFamily* AddCounter(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names = {});
  GaugeFamily* AddGauge(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names = {});
  // `bounds`: finite, strictly increasing upper bounds; +Inf is implied.
  HistogramFamily* AddHistogram(const std::string& name, const std::string& help,
                                std::vector<double> bounds,
                                std::vector<std::string> label_names = {});

  // The whole registry in the text exposition format (Content-Type
  // `text/plain; version=0.0.4; charset=utf-8`).
  std::string Render() const;

 private:
  struct Entry {
    MetricType type;
    std::vector<std::string> label_names;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
  };
  Entry* FindOrAdd(const std::string& name, MetricType type,
                   const std::vector<std::string>& label_names, bool* added);

  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::unique_ptr<Entry>>> entries_;
};

// Formats a sample value as Prometheus does: integers without a fraction, +Inf, -Inf, NaN.
std::string FormatMetricValue(double value);
// Escapes a label value (backslash, double quote, line feed).
std::string EscapeLabelValue(absl::string_view value);

}  // namespace tessera
