#include "coordinator/text/jinja/text_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>

#ifdef TESSERA_HAVE_ICU
#include <unicode/uchar.h>
#include <unicode/ucasemap.h>
#endif

#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/errors.h"

namespace tessera::jinja {
namespace {

std::string Encode(const std::vector<char32_t>& cps, size_t b, size_t e) {
  std::string out;
  for (size_t i = b; i < e && i < cps.size(); ++i) AppendUtf8(cps[i], &out);
  return out;
}

#ifdef TESSERA_HAVE_ICU
// Full Unicode case mapping (root locale, like Python's str.lower / str.upper).
std::optional<std::string> IcuCase(const std::string& s, bool upper) {
  UErrorCode err = U_ZERO_ERROR;
  UCaseMap* map = ucasemap_open("", 0, &err);
  if (U_FAILURE(err)) return std::nullopt;
  std::string out(s.size() * 3 + 16, '\0');
  auto run = [&]() {
    err = U_ZERO_ERROR;
    return upper ? ucasemap_utf8ToUpper(map, out.data(), static_cast<int32_t>(out.size()),
                                        s.data(), static_cast<int32_t>(s.size()), &err)
                 : ucasemap_utf8ToLower(map, out.data(), static_cast<int32_t>(out.size()),
                                        s.data(), static_cast<int32_t>(s.size()), &err);
  };
  int32_t n = run();
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    out.resize(static_cast<size_t>(n));
    n = run();
  }
  ucasemap_close(map);
  if (U_FAILURE(err)) return std::nullopt;
  out.resize(static_cast<size_t>(n));
  return out;
}
#endif

bool HasNonAscii(const std::string& s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return true;
  }
  return false;
}

std::string CaseMap(std::string s, bool upper) {
#ifdef TESSERA_HAVE_ICU
  if (HasNonAscii(s)) {
    if (std::optional<std::string> r = IcuCase(s, upper)) return *r;
  }
#endif
  for (char& c : s) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

bool IsUpperCp(char32_t c) {
#ifdef TESSERA_HAVE_ICU
  if (c >= 0x80) return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_UPPERCASE);
#endif
  return c >= 'A' && c <= 'Z';
}
bool IsLowerCp(char32_t c) {
#ifdef TESSERA_HAVE_ICU
  if (c >= 0x80) return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_LOWERCASE);
#endif
  return c >= 'a' && c <= 'z';
}
bool IsTitleCp(char32_t c) {
#ifdef TESSERA_HAVE_ICU
  if (c >= 0x80) return u_istitle(static_cast<UChar32>(c));
#endif
  return false;
}
bool IsCasedCp(char32_t c) { return IsUpperCp(c) || IsLowerCp(c) || IsTitleCp(c); }

std::string TitleChar(char32_t c) {
  std::string s;
#ifdef TESSERA_HAVE_ICU
  if (c >= 0x80) {
    AppendUtf8(static_cast<char32_t>(u_totitle(static_cast<UChar32>(c))), &s);
    return s;
  }
#endif
  AppendUtf8(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c, &s);
  return s;
}

std::string CpString(char32_t c) {
  std::string s;
  AppendUtf8(c, &s);
  return s;
}

void InsertGrouping(std::string* digits, char sep) {
  std::string out;
  const size_t n = digits->size();
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out.push_back(sep);
    out.push_back((*digits)[i]);
  }
  *digits = out;
}

std::string ToBase(uint64_t v, int base, bool upper) {
  if (v == 0) return "0";
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  while (v > 0) {
    out.push_back(digits[v % static_cast<uint64_t>(base)]);
    v /= static_cast<uint64_t>(base);
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// The part of a float format after the sign: digits, point, exponent.
std::string FloatBody(double x, char type, int precision, bool alt) {
  if (std::isnan(x)) return type >= 'A' && type <= 'Z' ? "NAN" : "nan";
  if (std::isinf(x)) return type >= 'A' && type <= 'Z' ? "INF" : "inf";
  char buf[512];
  std::string fmt = "%";
  if (alt) fmt += "#";
  fmt += ".*";
  fmt.push_back(type);
  std::snprintf(buf, sizeof(buf), fmt.c_str(), precision, x);
  return buf;
}

}  // namespace

absl::StatusOr<std::string> FormatWithSpec(const Value& v, absl::string_view spec) {
  if (spec.empty()) return v.Str();
  size_t i = 0;
  std::string fill = " ";
  char align = '\0';
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '=' || c == '^'; };
  // A fill character may be any code point.
  std::vector<char32_t> cps = DecodeUtf8(spec);
  std::string rest;
  if (cps.size() >= 2 && cps[1] < 0x80 && is_align(static_cast<char>(cps[1]))) {
    fill = CpString(cps[0]);
    align = static_cast<char>(cps[1]);
    rest = Encode(cps, 2, cps.size());
  } else if (!cps.empty() && cps[0] < 0x80 && is_align(static_cast<char>(cps[0]))) {
    align = static_cast<char>(cps[0]);
    rest = Encode(cps, 1, cps.size());
  } else {
    rest = std::string(spec);
  }
  char sign = '\0';
  bool alt = false, zero = false;
  int64_t width = -1, precision = -1;
  char grouping = '\0';
  if (i < rest.size() && (rest[i] == '+' || rest[i] == '-' || rest[i] == ' ')) sign = rest[i++];
  if (i < rest.size() && rest[i] == '#') {
    alt = true;
    ++i;
  }
  if (i < rest.size() && rest[i] == '0') {
    zero = true;
    ++i;
  }
  while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
    width = std::max<int64_t>(width, 0) * 10 + (rest[i++] - '0');
  }
  if (i < rest.size() && (rest[i] == ',' || rest[i] == '_')) grouping = rest[i++];
  if (i < rest.size() && rest[i] == '.') {
    ++i;
    if (i >= rest.size() || !std::isdigit(static_cast<unsigned char>(rest[i]))) {
      return ValueError("Format specifier missing precision");
    }
    precision = 0;
    while (i < rest.size() && std::isdigit(static_cast<unsigned char>(rest[i]))) {
      precision = precision * 10 + (rest[i++] - '0');
    }
  }
  char type = '\0';
  if (i < rest.size()) type = rest[i++];
  if (i < rest.size()) return ValueError("Invalid format specifier");
  if (zero && align == '\0') {
    fill.assign(1, '0');  // (not = "0": GCC 12 -Wrestrict false positive)
    align = '=';
  }

  std::string sign_str, body;
  bool numeric = true;
  if (v.is_string() || v.is_none() || v.is_list() || v.is_dict() || v.is_undefined()) {
    if (!v.is_string()) {
      return TypeError(absl::StrCat("unsupported format string passed to ", v.TypeName(),
                                    ".__format__"));
    }
    if (type != '\0' && type != 's') {
      return ValueError(absl::StrCat("Unknown format code '", std::string(1, type),
                                     "' for object of type 'str'"));
    }
    if (sign != '\0') return ValueError("Sign not allowed in string format specifier");
    if (align == '=') return ValueError("'=' alignment not allowed in string format specifier");
    numeric = false;
    body = v.str();
    if (precision >= 0) {
      std::vector<char32_t> b = DecodeUtf8(body);
      if (static_cast<int64_t>(b.size()) > precision) {
        body = Encode(b, 0, static_cast<size_t>(precision));
      }
    }
  } else if ((v.is_int() || v.is_bool()) &&
             (type == '\0' || type == 'd' || type == 'n' || type == 'b' || type == 'o' ||
              type == 'x' || type == 'X' || type == 'c')) {
    if (precision >= 0) return ValueError("Precision not allowed in integer format specifier");
    const int64_t n = v.int_value();
    const uint64_t mag = n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
    if (n < 0) {
      sign_str = "-";
    } else if (sign == '+') {
      sign_str = "+";
    } else if (sign == ' ') {
      sign_str = " ";
    }
    switch (type) {
      case 'b': body = ToBase(mag, 2, false); if (alt) sign_str += "0b"; break;
      case 'o': body = ToBase(mag, 8, false); if (alt) sign_str += "0o"; break;
      case 'x': body = ToBase(mag, 16, false); if (alt) sign_str += "0x"; break;
      case 'X': body = ToBase(mag, 16, true); if (alt) sign_str += "0X"; break;
      case 'c': sign_str.clear(); body = CpString(static_cast<char32_t>(n)); break;
      default: body = ToBase(mag, 10, false);
    }
    if (grouping != '\0' && type != 'c') InsertGrouping(&body, grouping);
  } else if (v.is_number()) {
    if (type != '\0' && type != 'e' && type != 'E' && type != 'f' && type != 'F' &&
        type != 'g' && type != 'G' && type != '%' && type != 'n') {
      return ValueError(absl::StrCat("Unknown format code '", std::string(1, type),
                                     "' for object of type '", v.TypeName(), "'"));
    }
    double x = v.float_value();
    if (std::signbit(x) && !std::isnan(x)) {
      sign_str = "-";
      x = -x;
    } else if (sign == '+') {
      sign_str = "+";
    } else if (sign == ' ') {
      sign_str = " ";
    }
    const int p = static_cast<int>(precision < 0 ? 6 : precision);
    switch (type) {
      case 'e': case 'E': case 'f': case 'F': body = FloatBody(x, type, p, alt); break;
      case '%': body = FloatBody(x * 100, 'f', p, alt) + "%"; break;
      case 'g': case 'G': case 'n':
        body = FloatBody(x, type == 'G' ? 'G' : 'g', precision == 0 ? 1 : p, alt);
        break;
      default:
        if (precision < 0) {
          body = FormatFloat(x);
        } else {
          // Like 'g', but fixed-point output keeps at least one digit after the point.
          body = FloatBody(x, 'g', precision == 0 ? 1 : static_cast<int>(precision), alt);
          if (body.find_first_of("e.ni") == std::string::npos) body += ".0";
        }
    }
    if (grouping != '\0') {
      size_t end = body.find_first_of(".eE%");
      if (end == std::string::npos) end = body.size();
      std::string int_part = body.substr(0, end);
      if (std::all_of(int_part.begin(), int_part.end(), ::isdigit)) {
        InsertGrouping(&int_part, grouping);
        body = int_part + body.substr(end);
      }
    }
  } else {
    return TypeError(absl::StrCat("unsupported format string passed to ", v.TypeName(),
                                  ".__format__"));
  }
  const int64_t len = static_cast<int64_t>(CodePointCount(sign_str) + CodePointCount(body));
  if (width <= len) return sign_str + body;
  const size_t pad = static_cast<size_t>(width - len);
  auto repeat = [&fill](size_t k) {
    std::string s;
    for (size_t j = 0; j < k; ++j) s += fill;
    return s;
  };
  if (align == '\0') align = numeric ? '>' : '<';
  switch (align) {
    case '<': return sign_str + body + repeat(pad);
    case '^': return repeat(pad / 2) + sign_str + body + repeat(pad - pad / 2);
    case '=': return sign_str + repeat(pad) + body;
    default: return repeat(pad) + sign_str + body;
  }
}

std::vector<std::string> TextWrap(const std::string& text, int64_t width, bool break_long_words,
                                  bool break_on_hyphens) {
  // Chunks: whitespace runs and words (words split after hyphens between letters, as
  // textwrap's wordsep_re does for "well-known").
  std::vector<char32_t> cps = DecodeUtf8(text);
  std::vector<std::vector<char32_t>> chunks;
  size_t i = 0;
  const size_t n = cps.size();
  auto is_letter = [](char32_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
  };
  while (i < n) {
    size_t j = i;
    if (IsPyWhitespace(cps[i])) {
      while (j < n && IsPyWhitespace(cps[j])) ++j;
    } else {
      while (j < n && !IsPyWhitespace(cps[j])) {
        ++j;
        if (break_on_hyphens && j < n && cps[j - 1] == '-' && j >= i + 3 &&
            is_letter(cps[j - 2]) && is_letter(cps[j - 3]) && is_letter(cps[j])) {
          break;
        }
      }
    }
    chunks.emplace_back(cps.begin() + static_cast<long>(i), cps.begin() + static_cast<long>(j));
    i = j;
  }
  auto blank = [](const std::vector<char32_t>& c) {
    return std::all_of(c.begin(), c.end(), IsPyWhitespace);
  };
  std::reverse(chunks.begin(), chunks.end());
  std::vector<std::string> lines;
  const int64_t w = std::max<int64_t>(width, 1);
  while (!chunks.empty()) {
    std::vector<std::vector<char32_t>> cur;
    int64_t cur_len = 0;
    if (blank(chunks.back()) && !lines.empty()) chunks.pop_back();
    while (!chunks.empty()) {
      const int64_t l = static_cast<int64_t>(chunks.back().size());
      if (cur_len + l > w) break;
      cur.push_back(chunks.back());
      chunks.pop_back();
      cur_len += l;
    }
    if (!chunks.empty() && static_cast<int64_t>(chunks.back().size()) > w) {
      const int64_t space_left = std::max<int64_t>(w - cur_len, 1);
      if (break_long_words) {
        std::vector<char32_t>& chunk = chunks.back();
        size_t end = static_cast<size_t>(space_left);
        if (break_on_hyphens && static_cast<int64_t>(chunk.size()) > space_left) {
          for (size_t h = end; h-- > 1;) {
            if (chunk[h] == '-') {
              if (std::any_of(chunk.begin(), chunk.begin() + static_cast<long>(h),
                              [](char32_t c) { return c != '-'; })) {
                end = h + 1;
              }
              break;
            }
          }
        }
        cur.emplace_back(chunk.begin(), chunk.begin() + static_cast<long>(end));
        chunk.erase(chunk.begin(), chunk.begin() + static_cast<long>(end));
      } else if (cur.empty()) {
        cur.push_back(chunks.back());
        chunks.pop_back();
      }
    }
    if (!cur.empty() && blank(cur.back())) cur.pop_back();
    if (!cur.empty()) {
      std::string line;
      for (const auto& c : cur) line += Encode(c, 0, c.size());
      lines.push_back(std::move(line));
    }
  }
  return lines;
}

std::string UrlQuote(absl::string_view s, absl::string_view safe) {
  static const char* const kUnreserved =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~";
  std::string out;
  for (char ch : s) {
    if (std::strchr(kUnreserved, ch) != nullptr || safe.find(ch) != absl::string_view::npos) {
      out.push_back(ch);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(ch));
      out += buf;
    }
  }
  return out;
}

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string StripTags(absl::string_view s) {
  std::string text(s);
  // <!-- ... --> then <...> (non-greedy, across lines).
  for (const auto& [open, close] : {std::pair<const char*, const char*>{"<!--", "-->"},
                                    std::pair<const char*, const char*>{"<", ">"}}) {
    std::string out;
    size_t pos = 0;
    while (true) {
      const size_t b = text.find(open, pos);
      const size_t e = b == std::string::npos ? b : text.find(close, b + std::strlen(open));
      if (e == std::string::npos) {
        out.append(text, pos, std::string::npos);
        break;
      }
      out.append(text, pos, b - pos);
      pos = e + std::strlen(close);
    }
    text = out;
  }
  // " ".join(text.split())
  std::vector<char32_t> cps = DecodeUtf8(text);
  std::string joined;
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && IsPyWhitespace(cps[i])) ++i;
    if (i >= cps.size()) break;
    if (!joined.empty()) joined.push_back(' ');
    while (i < cps.size() && !IsPyWhitespace(cps[i])) AppendUtf8(cps[i++], &joined);
  }
  // html.unescape: numeric references and the common named entities.
  static const std::pair<const char*, const char*> kNamed[] = {
      {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"},
      {"nbsp", "\xc2\xa0"}, {"copy", "\xc2\xa9"}, {"reg", "\xc2\xae"}, {"hellip", "\xe2\x80\xa6"},
      {"mdash", "\xe2\x80\x94"}, {"ndash", "\xe2\x80\x93"}};
  std::string out;
  for (size_t k = 0; k < joined.size(); ++k) {
    if (joined[k] != '&') {
      out.push_back(joined[k]);
      continue;
    }
    const size_t semi = joined.find(';', k);
    if (semi != std::string::npos && semi - k <= 12) {
      const std::string name = joined.substr(k + 1, semi - k - 1);
      if (name.size() > 1 && name[0] == '#') {
        const bool hex = name[1] == 'x' || name[1] == 'X';
        const std::string digits = name.substr(hex ? 2 : 1);
        char* end = nullptr;
        const unsigned long cp = std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
        if (!digits.empty() && end != nullptr && *end == '\0' && cp > 0 && cp < 0x110000) {
          AppendUtf8(static_cast<char32_t>(cp), &out);
          k = semi;
          continue;
        }
      }
      bool done = false;
      for (const auto& [n, rep] : kNamed) {
        if (name == n) {
          out += rep;
          k = semi;
          done = true;
          break;
        }
      }
      if (done) continue;
    }
    out.push_back('&');
  }
  return out;
}

namespace {
void AppendPretty(const Value& v, std::string* out) {
  if (v.is_dict()) {
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& kv : v.dict()) items.push_back(&kv);
    std::stable_sort(items.begin(), items.end(),
                     [](auto* a, auto* b) { return a->first < b->first; });
    out->push_back('{');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out->append(", ");
      AppendStringRepr(items[i]->first, out);
      out->append(": ");
      AppendPretty(items[i]->second, out);
    }
    out->push_back('}');
    return;
  }
  if (v.is_plain_list() || v.is_tuple()) {
    out->push_back(v.is_tuple() ? '(' : '[');
    const auto& items = v.list();
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out->append(", ");
      AppendPretty(items[i], out);
    }
    if (v.is_tuple() && items.size() == 1) out->push_back(',');
    out->push_back(v.is_tuple() ? ')' : ']');
    return;
  }
  v.AppendRepr(out);
}
}  // namespace

std::string PrettyRepr(const Value& v) {
  std::string out;
  AppendPretty(v, &out);
  return out;
}

std::string PyLower(const std::string& s) { return CaseMap(s, false); }
std::string PyUpper(const std::string& s) { return CaseMap(s, true); }

std::string PyCapitalize(const std::string& s) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  if (cps.empty()) return "";
  return TitleChar(cps[0]) + PyLower(Encode(cps, 1, cps.size()));
}

std::string PyTitle(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : DecodeUtf8(s)) {
    const std::string one = CpString(c);
    out += prev_cased ? PyLower(one) : TitleChar(c);
    prev_cased = IsCasedCp(c);
  }
  return out;
}

std::string JinjaTitle(const std::string& s) {
  std::string out;
  std::vector<char32_t> cps = DecodeUtf8(s);
  size_t i = 0;
  while (i < cps.size()) {
    const char32_t c = cps[i];
    const bool sep = IsPyWhitespace(c) || c == '-' || c == '(' || c == '{' || c == '[' ||
                     c == '<';
    if (sep) {
      AppendUtf8(c, &out);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && !(IsPyWhitespace(cps[j]) || cps[j] == '-' || cps[j] == '(' ||
                               cps[j] == '{' || cps[j] == '[' || cps[j] == '<')) {
      ++j;
    }
    out += PyUpper(CpString(cps[i])) + PyLower(Encode(cps, i + 1, j));
    i = j;
  }
  return out;
}

bool PyIsLower(const std::string& s) {
  bool cased = false;
  for (char32_t c : DecodeUtf8(s)) {
    if (IsUpperCp(c) || IsTitleCp(c)) return false;
    cased = cased || IsLowerCp(c);
  }
  return cased;
}

bool PyIsUpper(const std::string& s) {
  bool cased = false;
  for (char32_t c : DecodeUtf8(s)) {
    if (IsLowerCp(c) || IsTitleCp(c)) return false;
    cased = cased || IsUpperCp(c);
  }
  return cased;
}

}  // namespace tessera::jinja
