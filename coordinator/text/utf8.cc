// UTF-8 validation with U+FFFD replacement (see tokenizer.h).
#include <string>

#include "coordinator/text/tokenizer.h"

namespace tessera {

size_t AppendValidUtf8(absl::string_view bytes, bool final, Tokenizer::Replacement replacement,
                       std::string* out) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  const size_t n = bytes.size();
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  while (i < n) {
    // ASCII fast path.
    size_t a = i;
    while (a < n && b[a] < 0x80) ++a;
    if (a > i) {
      out->append(bytes.data() + i, a - i);
      i = a;
      continue;
    }
    const unsigned char c = b[i];
    int len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // Valid range of the second byte (Unicode table 3-7).
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {  // Not a lead byte.
      out->append(kReplacement);
      ++i;
      continue;
    }
    size_t j = i + 1;
    int k = 1;
    for (; k < len && j < n; ++k, ++j) {
      const unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
      if (b[j] < lo_k || b[j] > hi_k) break;
    }
    if (k == len) {
      out->append(bytes.data() + i, len);
      i = j;
      continue;
    }
    if (j == n && !final) return i;  // Incomplete at the end: may still be completed.
    // A maximal invalid subpart [i, j): one U+FFFD, or one per byte.
    const size_t count = replacement == Tokenizer::Replacement::kPerByte ? j - i : 1;
    for (size_t r = 0; r < count; ++r) out->append(kReplacement);
    i = j;
  }
  return n;
}

}  // namespace tessera
