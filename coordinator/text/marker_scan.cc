#include "coordinator/text/marker_scan.h"

#include <algorithm>

namespace tessera::text_internal {

size_t PartialMarkerSuffix(absl::string_view text,
                           std::initializer_list<absl::string_view> markers) {
  size_t max_len = 0;
  for (absl::string_view m : markers) max_len = std::max(max_len, m.size());
  if (max_len == 0) return 0;
  const size_t limit = std::min(text.size(), max_len - 1);
  for (size_t k = limit; k > 0; --k) {
    absl::string_view suffix = text.substr(text.size() - k);
    for (absl::string_view m : markers) {
      if (m.size() > k && m.substr(0, k) == suffix) return k;
    }
  }
  return 0;
}

MarkerHit FindFirstMarker(absl::string_view text,
                          std::initializer_list<absl::string_view> markers) {
  MarkerHit best;
  size_t i = 0;
  for (absl::string_view m : markers) {
    if (!m.empty()) {
      const size_t pos = text.find(m);
      if (pos != absl::string_view::npos &&
          (pos < best.pos || (pos == best.pos && m.size() > best.length))) {
        best.pos = pos;
        best.index = i;
        best.length = m.size();
      }
    }
    ++i;
  }
  return best;
}

absl::string_view TrimWhitespace(absl::string_view s) {
  auto is_space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

void NewlineTrimmer::Append(absl::string_view text, std::string* out) {
  if (at_start_) {
    while (!text.empty() && text.front() == '\n') text.remove_prefix(1);
    if (text.empty()) return;
    at_start_ = false;
  }
  size_t body = text.size();
  while (body > 0 && text[body - 1] == '\n') --body;
  if (body == 0) {
    pending_.append(text.data(), text.size());
    return;
  }
  out->append(pending_);
  pending_.clear();
  out->append(text.data(), body);
  pending_.append(text.data() + body, text.size() - body);
}

}  // namespace tessera::text_internal
