// Internal helpers of the output parsers (reasoning_parser, tool_parser, output_parser): finding
// marker strings in a streamed buffer and holding back only what could still become a marker.
//
// Contract: pure functions of their arguments; NewlineTrimmer is a small value type.
// Thread safety: none needed (no shared state).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"

namespace tessera::text_internal {

// Length of the longest proper suffix of `text` that is a prefix of one of `markers`: the bytes a
// streaming parser must hold back because the next delta could complete a marker.
size_t PartialMarkerSuffix(absl::string_view text,
                           std::initializer_list<absl::string_view> markers);

struct MarkerHit {
  size_t pos = absl::string_view::npos;  // npos: no marker in the text
  size_t index = 0;                      // which marker (position in the list)
  size_t length = 0;                     // its length
  bool found() const { return pos != absl::string_view::npos; }
};
// The leftmost occurrence of any of `markers` (the longest one on a tie). Empty markers are
// ignored.
MarkerHit FindFirstMarker(absl::string_view text, std::initializer_list<absl::string_view> markers);

absl::string_view TrimWhitespace(absl::string_view s);

// Drops the newlines that only format a section boundary (after <think>, around </think> and
// around tool-call blocks): leading newlines of a section are skipped, trailing newlines are held
// back until more text follows (then emitted) or the section ends (then dropped by Break()).
class NewlineTrimmer {
 public:
  void Append(absl::string_view text, std::string* out);
  // Section boundary: pending newlines are dropped, leading newlines of what follows skipped.
  // Returns the dropped newlines (a caller that later finds the boundary invalid re-emits them).
  std::string Break() {
    std::string dropped;
    dropped.swap(pending_);
    at_start_ = true;
    return dropped;
  }
  // Emits `text` as is (no newline trimming), after any pending newlines.
  void AppendVerbatim(absl::string_view text, std::string* out) {
    out->append(pending_);
    pending_.clear();
    out->append(text.data(), text.size());
    if (!text.empty()) at_start_ = false;
  }
  // End of output: pending newlines are kept (they are the model's text).
  void Flush(std::string* out) {
    out->append(pending_);
    pending_.clear();
  }

 private:
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace tessera::text_internal
