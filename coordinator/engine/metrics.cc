#include "coordinator/engine/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/logging.h"

namespace tessera {
namespace {

void AtomicAdd(std::atomic<double>* target, double amount) {
  double current = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(current, current + amount, std::memory_order_relaxed)) {
  }
}

bool ValidName(absl::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` (empty when there are no labels), with an optional extra trailing pair.
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      absl::string_view extra_name = {}, absl::string_view extra_value = {}) {
  std::vector<std::string> pairs;
  for (size_t i = 0; i < names.size(); ++i) {
    pairs.push_back(absl::StrCat(names[i], "=\"", EscapeLabelValue(values[i]), "\""));
  }
  if (!extra_name.empty()) {
    pairs.push_back(absl::StrCat(extra_name, "=\"", EscapeLabelValue(extra_value), "\""));
  }
  if (pairs.empty()) return "";
  return absl::StrCat("{", absl::StrJoin(pairs, ","), "}");
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", value);
  return buf;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Counter::Increment(double amount) {
  CHECK_GE(amount, 0.0);
  AtomicAdd(&value_, amount);
}

void Gauge::Add(double amount) { AtomicAdd(&value_, amount); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    CHECK(std::isfinite(bounds_[i]));
    if (i > 0) CHECK_LT(bounds_[i - 1], bounds_[i]);
  }
}

void Histogram::Observe(double value) {
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

template <typename T>
T* MetricFamily<T>::Labels(const std::vector<std::string>& label_values) {
  CHECK_EQ(label_values.size(), label_names_.size()) << "metric " << name_;
  std::string key = absl::StrJoin(label_values, std::string(1, '\0'));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second;
  std::unique_ptr<T> child;
  if constexpr (std::is_same_v<T, Histogram>) {
    child = std::make_unique<Histogram>(bounds_);
  } else {
    child = std::make_unique<T>();
  }
  T* raw = child.get();
  children_.emplace_back(label_values, std::move(child));
  index_[key] = raw;
  return raw;
}

template <typename T>
int MetricFamily<T>::num_children() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(children_.size());
}

template <typename T>
void MetricFamily<T>::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", TypeName(type_), "\n");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, child] : children_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      Histogram::Snapshot s = child->snapshot();
      for (size_t i = 0; i <= s.bounds.size(); ++i) {
        std::string le = i < s.bounds.size() ? FormatMetricValue(s.bounds[i]) : "+Inf";
        absl::StrAppend(out, name_, "_bucket", LabelText(label_names_, values, "le", le), " ",
                        s.cumulative[i], "\n");
      }
      absl::StrAppend(out, name_, "_sum", LabelText(label_names_, values), " ",
                      FormatMetricValue(s.sum), "\n");
      absl::StrAppend(out, name_, "_count", LabelText(label_names_, values), " ", s.count, "\n");
    } else {
      absl::StrAppend(out, name_, LabelText(label_names_, values), " ",
                      FormatMetricValue(child->value()), "\n");
    }
  }
}

template class MetricFamily<Counter>;
template class MetricFamily<Gauge>;
template class MetricFamily<Histogram>;

MetricsRegistry::Entry* MetricsRegistry::FindOrAdd(const std::string& name, MetricType type,
                                                   const std::vector<std::string>& label_names,
                                                   bool* added) {
  CHECK(ValidName(name, /*allow_colon=*/true)) << "invalid metric name " << name;
  for (const std::string& label : label_names) {
    CHECK(ValidName(label, /*allow_colon=*/false) && label != "le")
        << "invalid label name " << label << " of metric " << name;
  }
  for (auto& [existing, entry] : entries_) {
    if (existing == name) {
      CHECK(entry->type == type && entry->label_names == label_names)
          << "metric " << name << " registered twice with different type or labels";
      *added = false;
      return entry.get();
    }
  }
  auto entry = std::make_unique<Entry>();
  entry->type = type;
  entry->label_names = label_names;
  Entry* raw = entry.get();
  entries_.emplace_back(name, std::move(entry));
  *added = true;
  return raw;
}

CounterFamily* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                           std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added = false;
  Entry* e = FindOrAdd(name, MetricType::kCounter, label_names, &added);
  if (added) {
    e->counter.reset(
        new CounterFamily(name, help, MetricType::kCounter, std::move(label_names), {}));
  }
  return e->counter.get();
}

GaugeFamily* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added = false;
  Entry* e = FindOrAdd(name, MetricType::kGauge, label_names, &added);
  if (added) {
    e->gauge.reset(new GaugeFamily(name, help, MetricType::kGauge, std::move(label_names), {}));
  }
  return e->gauge.get();
}

HistogramFamily* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                               std::vector<double> bounds,
                                               std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added = false;
  Entry* e = FindOrAdd(name, MetricType::kHistogram, label_names, &added);
  if (added) {
    e->histogram.reset(new HistogramFamily(name, help, MetricType::kHistogram,
                                           std::move(label_names), std::move(bounds)));
  }
  return e->histogram.get();
}

std::string MetricsRegistry::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, entry] : entries_) {
    switch (entry->type) {
      case MetricType::kCounter:
        entry->counter->Render(&out);
        break;
      case MetricType::kGauge:
        entry->gauge->Render(&out);
        break;
      case MetricType::kHistogram:
        entry->histogram->Render(&out);
        break;
    }
  }
  return out;
}

}  // namespace tessera
