#include "coordinator/text/jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <optional>

#ifdef TESSERA_HAVE_ICU
#include <unicode/ucasemap.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/text/jinja/errors.h"
#include "coordinator/text/jinja/interpreter.h"
#include "coordinator/text/jinja/parser.h"
#include "kernels/base/status.h"

namespace tessera::jinja {
namespace {

// Binds positional and keyword arguments to parameter names; unset parameters stay Undefined
// (with an empty hint), so callers test is_undefined() for "not given".
absl::StatusOr<std::vector<Value>> Bind(absl::string_view fn, CallArgs& args,
                                        std::initializer_list<const char*> names) {
  std::vector<Value> out(names.size());
  std::vector<const char*> n(names);
  if (args.positional.size() > n.size()) {
    return TypeError(absl::StrCat(fn, "() takes at most ", n.size(), " argument(s) (",
                                  args.positional.size(), " given)"));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i];
  for (auto& [k, v] : args.keyword) {
    bool found = false;
    for (size_t i = 0; i < n.size(); ++i) {
      if (k == n[i]) {
        out[i] = v;
        found = true;
        break;
      }
    }
    if (!found) {
      return TypeError(absl::StrCat(fn, "() got an unexpected keyword argument '", k, "'"));
    }
  }
  return out;
}

bool Given(const Value& v) { return !v.is_undefined(); }

absl::StatusOr<int64_t> IntArg(absl::string_view fn, const Value& v, int64_t def) {
  if (!Given(v)) return def;
  if (v.is_int() || v.is_bool()) return v.int_value();
  return TypeError(absl::StrCat(fn, "(): expected an integer argument, got ", v.TypeName()));
}

absl::StatusOr<std::string> StrArg(absl::string_view fn, const Value& v) {
  if (!v.is_string()) {
    return TypeError(absl::StrCat(fn, "(): expected a string argument, got ", v.TypeName()));
  }
  return v.str();
}

#ifdef TESSERA_HAVE_ICU
// Full Unicode case mapping (root locale, like Python's str.lower/upper) for non-ASCII text.
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

// Python str.lower() / str.upper(): ASCII fast path, ICU for other scripts when built with it.
std::string AsciiLower(std::string s) {
#ifdef TESSERA_HAVE_ICU
  if (HasNonAscii(s)) {
    if (std::optional<std::string> r = IcuCase(s, false)) return *r;
  }
#endif
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}
std::string AsciiUpper(std::string s) {
#ifdef TESSERA_HAVE_ICU
  if (HasNonAscii(s)) {
    if (std::optional<std::string> r = IcuCase(s, true)) return *r;
  }
#endif
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}
bool IsAsciiAlpha(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string Encode(const std::vector<char32_t>& cps, size_t b, size_t e) {
  std::string out;
  for (size_t i = b; i < e; ++i) AppendUtf8(cps[i], &out);
  return out;
}

// Python str.strip / lstrip / rstrip.
std::string PyStrip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  std::vector<char32_t> set;
  const bool ws = !chars.is_string();
  if (!ws) set = DecodeUtf8(chars.str());
  auto strip_it = [&](char32_t c) {
    return ws ? IsPyWhitespace(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return Encode(cps, b, e);
}

std::vector<std::string> PySplitWhitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  std::vector<std::string> out;
  if (!from_right) {
    size_t i = 0;
    const size_t n = cps.size();
    while (true) {
      while (i < n && IsPyWhitespace(cps[i])) ++i;
      if (i >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = n;
        while (e > i && IsPyWhitespace(cps[e - 1])) --e;
        out.push_back(Encode(cps, i, e));
        break;
      }
      size_t j = i;
      while (j < n && !IsPyWhitespace(cps[j])) ++j;
      out.push_back(Encode(cps, i, j));
      i = j;
    }
    return out;
  }
  size_t e = cps.size();
  while (true) {
    while (e > 0 && IsPyWhitespace(cps[e - 1])) --e;
    if (e == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      size_t b = 0;
      while (b < e && IsPyWhitespace(cps[b])) ++b;
      out.push_back(Encode(cps, b, e));
      break;
    }
    size_t j = e;
    while (j > 0 && !IsPyWhitespace(cps[j - 1])) --j;
    out.push_back(Encode(cps, j, e));
    e = j;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> PySplit(const std::string& s, const std::string& sep, int64_t maxsplit,
                                 bool from_right) {
  std::vector<std::string> out;
  if (!from_right) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      size_t f = s.find(sep, pos);
      if (f == std::string::npos) break;
      out.push_back(s.substr(pos, f - pos));
      pos = f + sep.size();
    }
    out.push_back(s.substr(pos));
    return out;
  }
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t f = s.rfind(sep, end - sep.size());
    if (f == std::string::npos) break;
    out.push_back(s.substr(f + sep.size(), end - f - sep.size()));
    end = f;
  }
  out.push_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

bool IsLineBreak(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d ||
         c == 0x1e || c == 0x85 || c == 0x2028 || c == 0x2029;
}

std::vector<std::string> PySplitLines(const std::string& s, bool keepends) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  std::vector<std::string> out;
  size_t i = 0, start = 0;
  const size_t n = cps.size();
  while (i < n) {
    if (IsLineBreak(cps[i])) {
      size_t eol = i + 1;
      if (cps[i] == '\r' && i + 1 < n && cps[i + 1] == '\n') eol = i + 2;
      out.push_back(Encode(cps, start, keepends ? eol : i));
      start = i = eol;
    } else {
      ++i;
    }
  }
  if (start < n) out.push_back(Encode(cps, start, n));
  return out;
}

Value StringList(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.push_back(Value::String(p));
  return Value::List(std::move(items));
}

std::string PyReplace(const std::string& s, const std::string& old, const std::string& repl,
                      int64_t count) {
  std::string out;
  if (old.empty()) {
    std::vector<char32_t> cps = DecodeUtf8(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cps.size()) AppendUtf8(cps[i], &out);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += repl;
    pos = f + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python str.title(): first cased letter of each run of letters upper, the rest lower (ASCII).
std::string PyTitle(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const bool alpha = IsAsciiAlpha(static_cast<unsigned char>(c));
    if (alpha) {
      c = prev_cased ? static_cast<char>(std::tolower(c)) : static_cast<char>(std::toupper(c));
    }
    prev_cased = alpha;
  }
  return out;
}

std::string PyCapitalize(const std::string& s) {
  std::string out = AsciiLower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
}

// Jinja's do_title: capitalise words split at whitespace and -({[<.
std::string JinjaTitle(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    const bool sep = std::isspace(static_cast<unsigned char>(c)) || c == '-' || c == '(' ||
                     c == '{' || c == '[' || c == '<';
    if (sep) {
      out.push_back(c);
      word_start = true;
    } else if (word_start) {
      out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
      word_start = false;
    } else {
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  return out;
}

int64_t CpIndex(const std::string& s, size_t byte_pos) {
  return static_cast<int64_t>(CodePointCount(absl::string_view(s).substr(0, byte_pos)));
}

// Resolves Python's start/end code point arguments to a byte range of `s`.
void ByteRange(const std::string& s, const Value& start, const Value& end, size_t* b, size_t* e) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  const int64_t n = static_cast<int64_t>(cps.size());
  auto clamp = [n](int64_t i) { return i < 0 ? std::max<int64_t>(0, i + n) : std::min(i, n); };
  int64_t lo = (start.is_int() || start.is_bool()) ? clamp(start.int_value()) : 0;
  int64_t hi = (end.is_int() || end.is_bool()) ? clamp(end.int_value()) : n;
  *b = Encode(cps, 0, static_cast<size_t>(lo)).size();
  *e = hi < lo ? *b : Encode(cps, 0, static_cast<size_t>(hi)).size();
}

Value Tuple2(Value a, Value b) {
  std::vector<Value> items;
  items.push_back(std::move(a));
  items.push_back(std::move(b));
  return Value::List(std::move(items), true);
}

Value DictItems(const Value& d) {
  std::vector<Value> items;
  items.reserve(d.dict().size());
  for (const auto& kv : d.dict()) items.push_back(Tuple2(Value::String(kv.first), kv.second));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> StrMethod(const Value& self, absl::string_view name, CallArgs& args) {
  const std::string& s = self.str();
  if (name == "startswith" || name == "endswith") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"prefix", "start", "end"}));
    size_t b, e;
    ByteRange(s, a[1], a[2], &b, &e);
    absl::string_view view = absl::string_view(s).substr(b, e - b);
    std::vector<Value> cands;
    if (a[0].is_string()) {
      cands.push_back(a[0]);
    } else if (a[0].is_tuple()) {
      cands = a[0].list();
    } else {
      return TypeError(absl::StrCat(name, " first arg must be str or a tuple of str, not ",
                                    a[0].TypeName()));
    }
    for (const Value& c : cands) {
      if (!c.is_string()) return TypeError(absl::StrCat(name, ": tuple items must be str"));
      if (name == "startswith" ? absl::StartsWith(view, c.str()) : absl::EndsWith(view, c.str())) {
        return Value::Bool(true);
      }
    }
    return Value::Bool(false);
  }
  if (name == "split" || name == "rsplit") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"sep", "maxsplit"}));
    ASSIGN_OR_RETURN(int64_t maxsplit, IntArg(name, a[1], -1));
    if (!Given(a[0]) || a[0].is_none()) {
      return StringList(PySplitWhitespace(s, maxsplit, name == "rsplit"));
    }
    ASSIGN_OR_RETURN(std::string sep, StrArg(name, a[0]));
    if (sep.empty()) return TypeError("empty separator");
    return StringList(PySplit(s, sep, maxsplit, name == "rsplit"));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"chars"}));
    if (Given(a[0]) && !a[0].is_none() && !a[0].is_string()) {
      return TypeError(absl::StrCat(name, " arg must be None or str"));
    }
    return Value::String(PyStrip(s, a[0], name != "rstrip", name != "lstrip"));
  }
  if (name == "replace") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"old", "new", "count"}));
    ASSIGN_OR_RETURN(std::string old, StrArg(name, a[0]));
    ASSIGN_OR_RETURN(std::string repl, StrArg(name, a[1]));
    ASSIGN_OR_RETURN(int64_t count, IntArg(name, a[2], -1));
    return Value::String(PyReplace(s, old, repl, count));
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize" ||
      name == "swapcase") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {}));
    (void)a;
    if (name == "lower") return Value::String(AsciiLower(s));
    if (name == "upper") return Value::String(AsciiUpper(s));
    if (name == "title") return Value::String(PyTitle(s));
    if (name == "capitalize") return Value::String(PyCapitalize(s));
    std::string out = s;
    for (char& c : out) {
      if (c >= 'a' && c <= 'z') {
        c = static_cast<char>(c - 32);
      } else if (c >= 'A' && c <= 'Z') {
        c = static_cast<char>(c + 32);
      }
    }
    return Value::String(out);
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" ||
      name == "count") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"sub", "start", "end"}));
    ASSIGN_OR_RETURN(std::string sub, StrArg(name, a[0]));
    size_t b, e;
    ByteRange(s, a[1], a[2], &b, &e);
    absl::string_view view = absl::string_view(s).substr(b, e - b);
    if (name == "count") {
      if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePointCount(view)) + 1);
      int64_t n = 0;
      size_t pos = 0;
      while ((pos = view.find(sub, pos)) != absl::string_view::npos) {
        ++n;
        pos += sub.size();
      }
      return Value::Int(n);
    }
    size_t f = (name == "find" || name == "index") ? view.find(sub) : view.rfind(sub);
    if (f == absl::string_view::npos) {
      if (name == "index" || name == "rindex") return TypeError("substring not found");
      return Value::Int(-1);
    }
    return Value::Int(CpIndex(s, b + f));
  }
  if (name == "splitlines") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"keepends"}));
    return StringList(PySplitLines(s, a[0].Truthy()));
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"iterable"}));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(a[0]));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return TypeError(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                      items[i].TypeName(), " found"));
      }
      if (i > 0) out += s;
      out += items[i].str();
    }
    return Value::String(std::move(out));
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {}));
    (void)a;
    std::vector<char32_t> cps = DecodeUtf8(s);
    if (cps.empty()) return Value::Bool(false);
    bool ok = true, cased = false;
    for (char32_t c : cps) {
      const bool digit = c >= '0' && c <= '9';
      const bool alpha = IsAsciiAlpha(c) || c >= 0x80;
      if (name == "isdigit") ok = ok && digit;
      if (name == "isalpha") ok = ok && alpha;
      if (name == "isalnum") ok = ok && (alpha || digit);
      if (name == "isspace") ok = ok && IsPyWhitespace(c);
      if (name == "islower") {
        ok = ok && !(c >= 'A' && c <= 'Z');
        cased = cased || (c >= 'a' && c <= 'z');
      }
      if (name == "isupper") {
        ok = ok && !(c >= 'a' && c <= 'z');
        cased = cased || (c >= 'A' && c <= 'Z');
      }
    }
    if (name == "islower" || name == "isupper") ok = ok && cased;
    return Value::Bool(ok);
  }
  if (name == "format") {
    // str.format with automatic / numbered / named fields and no format specs.
    std::string out;
    size_t auto_index = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if ((c == '{' || c == '}') && i + 1 < s.size() && s[i + 1] == c) {
        out.push_back(c);
        ++i;
        continue;
      }
      if (c == '}') return TypeError("Single '}' encountered in format string");
      if (c != '{') {
        out.push_back(c);
        continue;
      }
      size_t close = s.find('}', i);
      if (close == std::string::npos) return TypeError("Single '{' encountered in format string");
      std::string field = s.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!") != std::string::npos) {
        return JinjaError(ErrorKind::kUnsupported, "str.format: format specs and conversions are not "
                                        "supported");
      }
      const Value* v = nullptr;
      if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
        const size_t idx = field.empty() ? auto_index++ : std::stoul(field);
        if (idx >= args.positional.size()) {
          return TypeError(absl::StrCat("Replacement index ", idx,
                                        " out of range for positional args tuple"));
        }
        v = &args.positional[idx];
      } else {
        for (const auto& kv : args.keyword) {
          if (kv.first == field) v = &kv.second;
        }
        if (v == nullptr) return TypeError(absl::StrCat("KeyError: '", field, "'"));
      }
      v->AppendStr(&out);
      i = close;
    }
    return Value::String(std::move(out));
  }
  return absl::NotFoundError("");
}

absl::StatusOr<Value> DictMethod(const Value& self, absl::string_view name, CallArgs& args) {
  if (name == "items" || name == "keys" || name == "values" || name == "copy") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {}));
    (void)a;
    if (name == "items") return DictItems(self);
    if (name == "copy") return Value::Dict(self.dict());
    std::vector<Value> items;
    for (const auto& kv : self.dict()) {
      items.push_back(name == "keys" ? Value::String(kv.first) : kv.second);
    }
    return Value::List(std::move(items));
  }
  if (name == "get") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"key", "default"}));
    if (a[0].is_string()) {
      const Value* v = self.Find(a[0].str());
      if (v != nullptr) return *v;
    }
    return Given(a[1]) ? a[1] : Value::None();
  }
  return absl::NotFoundError("");
}

absl::StatusOr<Value> ListMethod(const Value& self, absl::string_view name, CallArgs& args) {
  if (name == "index" || name == "count") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"value"}));
    int64_t n = 0;
    const auto& items = self.list();
    for (size_t i = 0; i < items.size(); ++i) {
      if (Equals(items[i], a[0])) {
        if (name == "index") return Value::Int(static_cast<int64_t>(i));
        ++n;
      }
    }
    if (name == "index") return TypeError("value is not in list");
    return Value::Int(n);
  }
  if (name == "copy") return Value::List(self.list(), self.is_tuple());
  return absl::NotFoundError("");
}

bool IsStrMethod(absl::string_view n) {
  static const char* const kNames[] = {
      "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "replace",
      "lower", "upper", "title", "capitalize", "swapcase", "find", "rfind", "index", "rindex",
      "count", "splitlines", "join", "isdigit", "isalpha", "isalnum", "isspace", "islower",
      "isupper", "format"};
  for (const char* k : kNames) {
    if (n == k) return true;
  }
  return false;
}

// ---- filters ----

// Jinja's make_attrgetter: "a.b.0" -> getitem per part (int parts as indices).
absl::StatusOr<Value> GetPath(Interpreter& in, const Value& obj, const Value& attribute) {
  if (!attribute.is_string()) return in.GetItem(obj, attribute);
  Value cur = obj;
  for (absl::string_view part : absl::StrSplit(attribute.str(), '.')) {
    Value key;
    if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      key = Value::Int(std::stoll(std::string(part)));
    } else {
      key = Value::String(std::string(part));
    }
    ASSIGN_OR_RETURN(cur, in.GetItem(cur, key));
  }
  return cur;
}

absl::StatusOr<Value> FJson(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("tojson", args, {"ensure_ascii", "indent", "separators",
                                                 "sort_keys"}));
  JsonOptions o;
  o.ensure_ascii = a[0].Truthy();
  if (Given(a[1]) && !a[1].is_none()) {
    if (a[1].is_string()) {
      o.indent = a[1].str();
    } else if (a[1].is_int() || a[1].is_bool()) {
      o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, a[1].int_value())), ' ');
    } else {
      return TypeError("tojson: indent must be an int or a str");
    }
    o.item_separator = ",";
  }
  if (Given(a[2]) && !a[2].is_none()) {
    if (!a[2].is_list() || a[2].list().size() != 2 || !a[2].list()[0].is_string() ||
        !a[2].list()[1].is_string()) {
      return TypeError("tojson: separators must be a (item_separator, key_separator) pair");
    }
    o.item_separator = a[2].list()[0].str();
    o.key_separator = a[2].list()[1].str();
  }
  o.sort_keys = a[3].Truthy();
  std::string out;
  RETURN_IF_ERROR(DumpJson(v, o, &out));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FString(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_string()) return v;
  return Value::String(v.Str());
}

absl::StatusOr<Value> FLength(Interpreter&, const Value& v, CallArgs&) {
  ASSIGN_OR_RETURN(int64_t n, Length(v));
  return Value::Int(n);
}

absl::StatusOr<Value> FFirst(Interpreter&, const Value& v, CallArgs&) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items.front();
}

absl::StatusOr<Value> FLast(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return UndefinedError(v);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

absl::StatusOr<Value> FJoin(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("join", args, {"d", "attribute"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::string sep = a[0].is_string() ? a[0].str() : a[0].Str();
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    if (Given(a[1]) && !a[1].is_none()) {
      ASSIGN_OR_RETURN(Value x, GetPath(in, items[i], a[1]));
      x.AppendStr(&out);
    } else {
      items[i].AppendStr(&out);
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FList(Interpreter&, const Value& v, CallArgs&) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FLower(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(AsciiLower(v.Str()));
}
absl::StatusOr<Value> FUpper(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(AsciiUpper(v.Str()));
}
absl::StatusOr<Value> FTitle(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(JinjaTitle(v.Str()));
}
absl::StatusOr<Value> FCapitalize(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(PyCapitalize(v.Str()));
}

absl::StatusOr<Value> FTrim(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("trim", args, {"chars"}));
  return Value::String(PyStrip(v.Str(), a[0], true, true));
}

absl::StatusOr<Value> FReplace(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("replace", args, {"old", "new", "count"}));
  ASSIGN_OR_RETURN(int64_t count, IntArg("replace", a[2], -1));
  return Value::String(PyReplace(v.Str(), a[0].Str(), a[1].Str(), count));
}

absl::StatusOr<Value> FDefault(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("default", args, {"default_value", "boolean"}));
  const Value def = Given(a[0]) ? a[0] : Value::String("");
  if (v.is_undefined() || (a[1].Truthy() && !v.Truthy())) return def;
  return v;
}

absl::StatusOr<Value> FSafe(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() ? v : Value::String(v.Str());
}

absl::StatusOr<Value> FEscape(Interpreter&, const Value& v, CallArgs&) {
  std::string out;
  for (char c : v.Str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FIndent(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("indent", args, {"width", "first", "blank"}));
  std::string ind;
  if (a[0].is_string()) {
    ind = a[0].str();
  } else {
    ASSIGN_OR_RETURN(int64_t w, IntArg("indent", a[0], 4));
    ind = std::string(static_cast<size_t>(std::max<int64_t>(0, w)), ' ');
  }
  std::vector<std::string> lines = PySplitLines(v.Str() + "\n", false);
  std::string rv;
  if (a[2].Truthy()) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + ind;
      rv += lines[i];
    }
  } else if (!lines.empty()) {
    rv = lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += ind;
      rv += lines[i];
    }
  }
  if (a[1].Truthy()) rv = ind + rv;
  return Value::String(std::move(rv));
}

absl::StatusOr<Value> FWordcount(Interpreter&, const Value& v, CallArgs&) {
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : DecodeUtf8(v.Str())) {
    const bool word = (c < 0x80) ? (std::isalnum(static_cast<int>(c)) || c == '_')
                                 : !IsPyWhitespace(c) && !(c >= 0x2000 && c <= 0x206f) &&
                                       !(c >= 0x3000 && c <= 0x303f) &&
                                       !(c >= 0xff00 && c <= 0xff0f);
    if (word && !in_word) ++n;
    in_word = word;
  }
  return Value::Int(n);
}

absl::StatusOr<Value> SortKey(Interpreter& in, const Value& item, const Value& attribute,
                              bool case_sensitive) {
  Value k = item;
  if (Given(attribute) && !attribute.is_none()) {
    ASSIGN_OR_RETURN(k, GetPath(in, item, attribute));
  }
  if (!case_sensitive && k.is_string()) return Value::String(AsciiLower(k.str()));
  return k;
}

absl::StatusOr<Value> FUnique(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("unique", args, {"case_sensitive", "attribute"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> seen, out;
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value k, SortKey(in, item, a[1], a[0].Truthy()));
    bool dup = false;
    for (const Value& s : seen) {
      if (Equals(s, k)) {
        dup = true;
        break;
      }
    }
    if (!dup) {
      seen.push_back(k);
      out.push_back(item);
    }
  }
  return Value::List(std::move(out));
}

absl::StatusOr<std::vector<Value>> SortValues(Interpreter& in, std::vector<Value> items,
                                              const Value& attribute, bool case_sensitive,
                                              bool reverse) {
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(Value k, SortKey(in, items[i], attribute, case_sensitive));
    keyed.emplace_back(std::move(k), i);
  }
  absl::Status err;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    absl::StatusOr<int> c = Compare(reverse ? y.first : x.first, reverse ? x.first : y.first, "<");
    if (!c.ok()) {
      err = c.status();
      return false;
    }
    return *c < 0;
  });
  RETURN_IF_ERROR(err);
  std::vector<Value> out;
  for (auto& [k, i] : keyed) out.push_back(items[i]);
  return out;
}

absl::StatusOr<Value> FSort(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("sort", args, {"reverse", "case_sensitive", "attribute"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  ASSIGN_OR_RETURN(items, SortValues(in, std::move(items), a[2], a[1].Truthy(), a[0].Truthy()));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FDictsort(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("dictsort", args, {"case_sensitive", "by", "reverse"}));
  if (!v.is_dict()) return TypeError("dictsort: can only sort a mapping");
  const bool by_value = a[1].is_string() && a[1].str() == "value";
  Value items = DictItems(v);
  ASSIGN_OR_RETURN(std::vector<Value> sorted,
                   SortValues(in, items.list(), Value::Int(by_value ? 1 : 0), a[0].Truthy(),
                              a[2].Truthy()));
  return Value::List(std::move(sorted));
}

absl::StatusOr<Value> FReverse(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_string()) {
    std::vector<char32_t> cps = DecodeUtf8(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::String(Encode(cps, 0, cps.size()));
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::reverse(items.begin(), items.end());
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FRound(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("round", args, {"precision", "method"}));
  ASSIGN_OR_RETURN(int64_t precision, IntArg("round", a[0], 0));
  const std::string method = a[1].is_string() ? a[1].str() : "common";
  if (!v.is_number()) return TypeError("round: value must be a number");
  const double scale = std::pow(10.0, static_cast<double>(precision));
  double x = v.float_value() * scale;
  if (method == "common") {
    if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
    x = std::nearbyint(x);
  } else if (method == "ceil") {
    x = std::ceil(x);
  } else if (method == "floor") {
    x = std::floor(x);
  } else {
    return TypeError("method must be common, ceil or floor");
  }
  return Value::Float(x / scale);
}

absl::StatusOr<Value> FAbs(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_float()) return Value::Float(std::fabs(v.float_value()));
  if (v.is_int() || v.is_bool()) return Value::Int(std::llabs(v.int_value()));
  return TypeError(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
}

absl::StatusOr<Value> FInt(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("int", args, {"default", "base"}));
  const Value def = Given(a[0]) ? a[0] : Value::Int(0);
  if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
  if (v.is_float()) return Value::Int(static_cast<int64_t>(v.float_value()));
  if (v.is_string()) {
    ASSIGN_OR_RETURN(int64_t base, IntArg("int", a[1], 10));
    std::string s = PyStrip(v.str(), Value(), true, true);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    char* end = nullptr;
    errno = 0;
    long long r = std::strtoll(s.c_str(), &end, static_cast<int>(base));
    if (!s.empty() && end != nullptr && *end == '\0' && errno == 0) return Value::Int(r);
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end != nullptr && *end == '\0') return Value::Int(static_cast<int64_t>(d));
  }
  return def;
}

absl::StatusOr<Value> FFloat(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("float", args, {"default"}));
  const Value def = Given(a[0]) ? a[0] : Value::Float(0.0);
  if (v.is_number()) return Value::Float(v.float_value());
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), Value(), true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end != nullptr && *end == '\0') return Value::Float(d);
  }
  return def;
}

absl::StatusOr<Value> FItems(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::List({});
  if (!v.is_dict()) return TypeError("Can only get item pairs from a mapping.");
  return DictItems(v);
}

absl::StatusOr<Value> FMap(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> out;
  Value attribute, def;
  bool by_attr = false;
  for (auto& [k, x] : args.keyword) {
    if (k == "attribute") {
      attribute = x;
      by_attr = true;
    } else if (k == "default") {
      def = x;
    } else if (!args.positional.empty()) {
      continue;  // keyword arguments of the mapped filter
    } else {
      return TypeError(absl::StrCat("map: unexpected keyword argument '", k, "'"));
    }
  }
  if (by_attr) {
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value x, GetPath(in, item, attribute));
      if (x.is_undefined() && Given(def)) x = def;
      out.push_back(std::move(x));
    }
    return Value::List(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return TypeError("map: give a filter name or attribute=");
  }
  const std::string filter = args.positional[0].str();
  for (const Value& item : items) {
    CallArgs fa;
    fa.positional.assign(args.positional.begin() + 1, args.positional.end());
    fa.keyword = args.keyword;
    ASSIGN_OR_RETURN(Value x, in.ApplyFilterByName(filter, item, fa));
    out.push_back(std::move(x));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> SelectImpl(Interpreter& in, const Value& v, CallArgs& args, bool by_attr,
                                 bool keep_if) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  size_t next = 0;
  Value attribute;
  if (by_attr) {
    if (args.positional.empty()) return TypeError("selectattr/rejectattr need an attribute");
    attribute = args.positional[next++];
  }
  std::string test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return TypeError("the test name must be a string");
    test = args.positional[next++].str();
  }
  std::vector<Value> out;
  for (const Value& item : items) {
    Value x = item;
    if (by_attr) {
      ASSIGN_OR_RETURN(x, GetPath(in, item, attribute));
    }
    bool r;
    if (test.empty()) {
      r = x.Truthy();
    } else {
      CallArgs ta;
      ta.positional.assign(args.positional.begin() + static_cast<long>(next),
                           args.positional.end());
      ta.keyword = args.keyword;
      ASSIGN_OR_RETURN(r, in.ApplyTestByName(test, x, ta));
    }
    if (r == keep_if) out.push_back(item);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> FSelect(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectImpl(in, v, a, false, true);
}
absl::StatusOr<Value> FReject(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectImpl(in, v, a, false, false);
}
absl::StatusOr<Value> FSelectAttr(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectImpl(in, v, a, true, true);
}
absl::StatusOr<Value> FRejectAttr(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectImpl(in, v, a, true, false);
}

absl::StatusOr<Value> FTruncate(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("truncate", args, {"length", "killwords", "end", "leeway"}));
  ASSIGN_OR_RETURN(int64_t length, IntArg("truncate", a[0], 255));
  ASSIGN_OR_RETURN(int64_t leeway, IntArg("truncate", a[3], 5));
  const std::string end = a[2].is_string() ? a[2].str() : "...";
  std::vector<char32_t> cps = DecodeUtf8(v.Str());
  const int64_t end_len = static_cast<int64_t>(CodePointCount(end));
  if (length < end_len) return TypeError("expected length >= len(end)");
  if (static_cast<int64_t>(cps.size()) <= length + leeway) return Value::String(v.Str());
  std::string head = Encode(cps, 0, static_cast<size_t>(length - end_len));
  if (a[1].Truthy()) return Value::String(head + end);
  const size_t sp = head.rfind(' ');
  if (sp != std::string::npos) head = head.substr(0, sp);
  return Value::String(head + end);
}

absl::StatusOr<Value> FBatch(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("batch", args, {"linecount", "fill_with"}));
  ASSIGN_OR_RETURN(int64_t n, IntArg("batch", a[0], 1));
  if (n <= 0) return TypeError("batch: linecount must be positive");
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> out, cur;
  for (const Value& item : items) {
    cur.push_back(item);
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::List(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (Given(a[1])) {
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(a[1]);
    }
    out.push_back(Value::List(std::move(cur)));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> MinMax(Interpreter& in, const Value& v, CallArgs& args, bool want_max) {
  ASSIGN_OR_RETURN(auto a, Bind(want_max ? "max" : "min", args, {"case_sensitive", "attribute"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) {
    return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
  }
  size_t best = 0;
  ASSIGN_OR_RETURN(Value best_key, SortKey(in, items[0], a[1], a[0].Truthy()));
  for (size_t i = 1; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(Value k, SortKey(in, items[i], a[1], a[0].Truthy()));
    ASSIGN_OR_RETURN(int c, Compare(k, best_key, want_max ? ">" : "<"));
    if (want_max ? c > 0 : c < 0) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}
absl::StatusOr<Value> FMax(Interpreter& in, const Value& v, CallArgs& a) {
  return MinMax(in, v, a, true);
}
absl::StatusOr<Value> FMin(Interpreter& in, const Value& v, CallArgs& a) {
  return MinMax(in, v, a, false);
}

absl::StatusOr<Value> FSum(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("sum", args, {"attribute", "start"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  Value acc = Given(a[1]) ? a[1] : Value::Int(0);
  for (const Value& item : items) {
    Value x = item;
    if (Given(a[0])) {
      ASSIGN_OR_RETURN(x, GetPath(in, item, a[0]));
    }
    if (!x.is_number() || !acc.is_number()) {
      return TypeError(absl::StrCat("unsupported operand type(s) for +: '", acc.TypeName(),
                                    "' and '", x.TypeName(), "'"));
    }
    if (acc.is_float() || x.is_float()) {
      acc = Value::Float(acc.float_value() + x.float_value());
    } else {
      acc = Value::Int(acc.int_value() + x.int_value());
    }
  }
  return acc;
}

absl::StatusOr<Value> FAttr(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("attr", args, {"name"}));
  ASSIGN_OR_RETURN(std::string name, StrArg("attr", a[0]));
  absl::StatusOr<Value> m = BoundMethod(v, name);
  if (m.ok()) return m;
  if (v.is_namespace()) {
    const Value* x = v.Find(name);
    if (x != nullptr) return *x;
  }
  return Value::Undefined(absl::StrCat("'", v.TypeRepr(), "' has no attribute '", name, "'"));
}


absl::StatusOr<Value> FFormat(Interpreter&, const Value& v, CallArgs& args) {
  if (!args.positional.empty() && !args.keyword.empty()) {
    return TypeError("can't handle positional and keyword arguments at the same time");
  }
  if (!args.keyword.empty()) return PercentFormat(v.Str(), Value::Dict(args.keyword));
  return PercentFormat(v.Str(), Value::List(args.positional, /*tuple=*/true));
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};
const NamedFilter kFilters[] = {
    {"abs", FAbs},         {"attr", FAttr},           {"batch", FBatch},
    {"capitalize", FCapitalize}, {"count", FLength},  {"d", FDefault},
    {"default", FDefault}, {"dictsort", FDictsort},   {"e", FEscape},
    {"escape", FEscape},   {"first", FFirst},         {"float", FFloat},
    {"forceescape", FEscape}, {"format", FFormat},    {"indent", FIndent},
    {"int", FInt},
    {"items", FItems},     {"join", FJoin},           {"last", FLast},
    {"length", FLength},   {"list", FList},           {"lower", FLower},
    {"map", FMap},         {"max", FMax},             {"min", FMin},
    {"reject", FReject},   {"rejectattr", FRejectAttr}, {"replace", FReplace},
    {"reverse", FReverse}, {"round", FRound},         {"safe", FSafe},
    {"select", FSelect},   {"selectattr", FSelectAttr}, {"sort", FSort},
    {"string", FString},   {"sum", FSum},             {"title", FTitle},
    {"tojson", FJson},     {"trim", FTrim},           {"truncate", FTruncate},
    {"unique", FUnique},   {"upper", FUpper},         {"wordcount", FWordcount},
};

// ---- tests ----

absl::StatusOr<Value> OneArg(absl::string_view test, CallArgs& args) {
  if (args.positional.size() != 1 || !args.keyword.empty()) {
    return TypeError(absl::StrCat("test '", test, "' takes exactly one argument"));
  }
  return args.positional[0];
}

#define TESSERA_JINJA_TEST(NAME, EXPR)                                          \
  absl::StatusOr<bool> NAME(Interpreter&, [[maybe_unused]] const Value& v, CallArgs&) { \
    return EXPR;                                                                \
  }

TESSERA_JINJA_TEST(TDefined, !v.is_undefined())
TESSERA_JINJA_TEST(TUndefined, v.is_undefined())
TESSERA_JINJA_TEST(TNone, v.is_none())
TESSERA_JINJA_TEST(TBoolean, v.is_bool())
TESSERA_JINJA_TEST(TFalse, v.is_bool() && !v.bool_value())
TESSERA_JINJA_TEST(TTrue, v.is_bool() && v.bool_value())
TESSERA_JINJA_TEST(TInteger, v.is_int())
TESSERA_JINJA_TEST(TFloat, v.is_float())
TESSERA_JINJA_TEST(TNumber, v.is_number())
TESSERA_JINJA_TEST(TString, v.is_string())
TESSERA_JINJA_TEST(TMapping, v.is_dict())
TESSERA_JINJA_TEST(TIterable,
                   v.is_undefined() || v.is_string() || v.is_list() || v.is_dict())
TESSERA_JINJA_TEST(TSequence,
                   v.is_undefined() || v.is_string() || v.is_list() || v.is_dict())
TESSERA_JINJA_TEST(TCallable, v.is_callable())
TESSERA_JINJA_TEST(TEscaped, false)
TESSERA_JINJA_TEST(TLower, v.is_string() && AsciiLower(v.str()) == v.str() &&
                               AsciiUpper(v.str()) != v.str())
TESSERA_JINJA_TEST(TUpper, v.is_string() && AsciiUpper(v.str()) == v.str() &&
                               AsciiLower(v.str()) != v.str())
#undef TESSERA_JINJA_TEST

absl::StatusOr<bool> TOdd(Interpreter&, const Value& v, CallArgs&) {
  if (!v.is_int() && !v.is_bool()) return TypeError("test 'odd' needs an integer");
  return (v.int_value() % 2) != 0;
}
absl::StatusOr<bool> TEven(Interpreter&, const Value& v, CallArgs&) {
  if (!v.is_int() && !v.is_bool()) return TypeError("test 'even' needs an integer");
  return (v.int_value() % 2) == 0;
}
absl::StatusOr<bool> TDivisibleBy(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value n, OneArg("divisibleby", args));
  if (!v.is_number() || !n.is_number()) return TypeError("divisibleby needs numbers");
  if (v.is_float() || n.is_float()) return std::fmod(v.float_value(), n.float_value()) == 0;
  if (n.int_value() == 0) return TypeError("integer division or modulo by zero");
  return v.int_value() % n.int_value() == 0;
}
absl::StatusOr<bool> TEq(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("eq", args));
  return Equals(v, o);
}
absl::StatusOr<bool> TNe(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("ne", args));
  return !Equals(v, o);
}
absl::StatusOr<bool> TLt(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("lt", args));
  ASSIGN_OR_RETURN(int c, Compare(v, o, "<"));
  return c < 0;
}
absl::StatusOr<bool> TLe(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("le", args));
  ASSIGN_OR_RETURN(int c, Compare(v, o, "<="));
  return c <= 0;
}
absl::StatusOr<bool> TGt(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("gt", args));
  ASSIGN_OR_RETURN(int c, Compare(v, o, ">"));
  return c > 0;
}
absl::StatusOr<bool> TGe(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("ge", args));
  ASSIGN_OR_RETURN(int c, Compare(v, o, ">="));
  return c >= 0;
}
absl::StatusOr<bool> TIn(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value seq, OneArg("in", args));
  if (seq.is_string()) {
    if (!v.is_string()) return TypeError("'in <string>' requires string as left operand");
    return seq.str().find(v.str()) != std::string::npos;
  }
  if (seq.is_dict()) return v.is_string() && seq.Find(v.str()) != nullptr;
  for (const Value& x : seq.list()) {
    if (Equals(x, v)) return true;
  }
  return false;
}
absl::StatusOr<bool> TSameAs(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value o, OneArg("sameas", args));
  if (v.type() != o.type()) return false;
  if (v.is_none() || v.is_bool() || v.is_int()) return Equals(v, o);
  if (v.is_list() || v.is_dict() || v.is_namespace()) {
    return v.is_list() ? &v.list() == &o.list() : &v.dict() == &o.dict();
  }
  return false;
}
absl::StatusOr<bool> TFilter(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && FindFilter(v.str()) != nullptr;
}
absl::StatusOr<bool> TTest(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && FindTest(v.str()) != nullptr;
}

struct NamedTest {
  const char* name;
  TestFn fn;
};
const NamedTest kTests[] = {
    {"boolean", TBoolean}, {"callable", TCallable}, {"defined", TDefined},
    {"divisibleby", TDivisibleBy}, {"eq", TEq}, {"equalto", TEq}, {"==", TEq},
    {"escaped", TEscaped}, {"even", TEven}, {"false", TFalse}, {"filter", TFilter},
    {"float", TFloat}, {"ge", TGe}, {">=", TGe}, {"gt", TGt}, {"greaterthan", TGt},
    {">", TGt}, {"in", TIn}, {"integer", TInteger}, {"iterable", TIterable},
    {"le", TLe}, {"<=", TLe}, {"lower", TLower}, {"lt", TLt}, {"lessthan", TLt},
    {"<", TLt}, {"mapping", TMapping}, {"ne", TNe}, {"!=", TNe}, {"none", TNone},
    {"number", TNumber}, {"odd", TOdd}, {"sameas", TSameAs}, {"sequence", TSequence},
    {"string", TString}, {"test", TTest}, {"true", TTrue}, {"undefined", TUndefined},
    {"upper", TUpper},
};

// ---- globals ----

absl::StatusOr<Value> GRange(Interpreter&, CallArgs& args) {
  if (!args.keyword.empty()) return TypeError("range() takes no keyword arguments");
  int64_t start = 0, stop = 0, step = 1;
  std::vector<int64_t> v;
  for (const Value& a : args.positional) {
    if (!a.is_int() && !a.is_bool()) {
      return TypeError(absl::StrCat("'", a.TypeName(),
                                    "' object cannot be interpreted as an integer"));
    }
    v.push_back(a.int_value());
  }
  if (v.size() == 1) {
    stop = v[0];
  } else if (v.size() == 2 || v.size() == 3) {
    start = v[0];
    stop = v[1];
    if (v.size() == 3) step = v[2];
  } else {
    return TypeError(absl::StrCat("range expected 1 to 3 arguments, got ", v.size()));
  }
  if (step == 0) return TypeError("range() arg 3 must not be zero");
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (out.size() >= 100000) {
      return ValueError(
          "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    out.push_back(Value::Int(i));
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> GNamespace(Interpreter&, CallArgs& args) {
  std::vector<std::pair<std::string, Value>> attrs;
  auto put = [&attrs](const std::string& k, const Value& v) {
    for (auto& kv : attrs) {
      if (kv.first == k) {
        kv.second = v;
        return;
      }
    }
    attrs.emplace_back(k, v);
  };
  for (const Value& a : args.positional) {
    if (!a.is_dict()) return TypeError("namespace() positional arguments must be mappings");
    for (const auto& kv : a.dict()) put(kv.first, kv.second);
  }
  for (const auto& kv : args.keyword) put(kv.first, kv.second);
  return Value::Namespace(std::move(attrs));
}

absl::StatusOr<Value> GDict(Interpreter&, CallArgs& args) {
  std::vector<std::pair<std::string, Value>> items;
  for (const Value& a : args.positional) {
    if (!a.is_dict()) return TypeError("dict() positional argument must be a mapping");
    items = a.dict();
  }
  for (const auto& kv : args.keyword) {
    bool done = false;
    for (auto& it : items) {
      if (it.first == kv.first) {
        it.second = kv.second;
        done = true;
      }
    }
    if (!done) items.push_back(kv);
  }
  return Value::Dict(std::move(items));
}

absl::StatusOr<Value> GRaise(Interpreter&, CallArgs& args) {
  std::string msg = args.positional.empty() ? "" : args.positional[0].Str();
  return JinjaError(ErrorKind::kRaised, absl::StrCat(kRaiseExceptionPrefix, msg));
}

absl::StatusOr<Value> GStrftime(Interpreter&, CallArgs& args) {
  if (args.positional.size() != 1 || !args.positional[0].is_string()) {
    return TypeError("strftime_now(format) takes one string");
  }
  std::time_t now = std::time(nullptr);
  std::tm tm;
  localtime_r(&now, &tm);
  char buf[512];
  const size_t n = std::strftime(buf, sizeof(buf), args.positional[0].str().c_str(), &tm);
  return Value::String(std::string(buf, n));
}

}  // namespace

const std::vector<std::pair<std::string, Value>>& GlobalFunctions() {
  static const auto* globals = new std::vector<std::pair<std::string, Value>>{
      {"range", Value::Callable("range", GRange)},
      {"namespace", Value::Callable("namespace", GNamespace)},
      {"dict", Value::Callable("dict", GDict)},
      {"raise_exception", Value::Callable("raise_exception", GRaise)},
      {"strftime_now", Value::Callable("strftime_now", GStrftime)},
  };
  return *globals;
}

absl::StatusOr<Value> BoundMethod(const Value& obj, absl::string_view name) {
  const std::string n(name);
  if (obj.is_string()) {
    if (!IsStrMethod(name)) return absl::NotFoundError("");
    return Value::Callable(n, [obj, n](Interpreter&, CallArgs& args) {
      return StrMethod(obj, n, args);
    });
  }
  if (obj.is_dict()) {
    if (name == "items" || name == "keys" || name == "values" || name == "get" ||
        name == "copy") {
      return Value::Callable(n, [obj, n](Interpreter&, CallArgs& args) {
        return DictMethod(obj, n, args);
      });
    }
    if (name == "pop" || name == "popitem" || name == "setdefault" || name == "update" ||
        name == "clear") {
      return Value::Undefined(
          absl::StrCat("access to attribute '", name, "' of 'dict' object is unsafe."), true);
    }
    return absl::NotFoundError("");
  }
  if (obj.is_list()) {
    if (name == "index" || name == "count" || (name == "copy" && !obj.is_tuple())) {
      return Value::Callable(n, [obj, n](Interpreter&, CallArgs& args) {
        return ListMethod(obj, n, args);
      });
    }
    if (!obj.is_tuple() && (name == "append" || name == "extend" || name == "insert" ||
                            name == "pop" || name == "remove" || name == "clear" ||
                            name == "sort" || name == "reverse")) {
      return Value::Undefined(
          absl::StrCat("access to attribute '", name, "' of 'list' object is unsafe."), true);
    }
  }
  return absl::NotFoundError("");
}

absl::StatusOr<Value> PercentFormat(const std::string& fmt, const Value& args) {
  std::vector<Value> positional;
  const bool mapping = args.is_dict();
  if (args.is_tuple()) {
    positional = args.list();
  } else if (!mapping) {
    positional.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) return TypeError("incomplete format");
    const Value* arg = nullptr;
    if (fmt[i] == '(') {
      const size_t close = fmt.find(')', i);
      if (close == std::string::npos) return TypeError("incomplete format key");
      if (!mapping) return TypeError("format requires a mapping");
      const std::string key = fmt.substr(i + 1, close - i - 1);
      arg = args.Find(key);
      if (arg == nullptr) return TypeError(absl::StrCat("KeyError: '", key, "'"));
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::strchr("-+ #0", fmt[i]) != nullptr) flags.push_back(fmt[i++]);
    std::string width, precision;
    while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i]))) width.push_back(fmt[i++]);
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      precision = "0";
      while (i < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[i]))) {
        if (precision == "0") precision.clear();
        precision.push_back(fmt[i++]);
      }
    }
    if (i >= fmt.size()) return TypeError("incomplete format");
    const char conv = fmt[i];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (arg == nullptr) {
      if (mapping) return TypeError("format requires a mapping");
      if (next >= positional.size()) return TypeError("not enough arguments for format string");
      arg = &positional[next++];
    }
    std::string piece;
    const std::string spec = "%" + flags + width + (precision.empty() ? "" : "." + precision);
    char buf[512];
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        if (conv == 's') {
          piece = arg->Str();
        } else {
          arg->AppendRepr(&piece);
        }
        if (!precision.empty()) {
          std::vector<char32_t> cps = DecodeUtf8(piece);
          const size_t p = static_cast<size_t>(std::stoul(precision));
          if (cps.size() > p) piece = Encode(cps, 0, p);
        }
        const size_t w = width.empty() ? 0 : static_cast<size_t>(std::stoul(width));
        const size_t len = CodePointCount(piece);
        if (len < w) {
          const std::string pad(w - len, ' ');
          piece = flags.find('-') != std::string::npos ? piece + pad : pad + piece;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
      case 'c': {
        if (!arg->is_number()) {
          return TypeError(absl::StrCat("%", std::string(1, conv), " format: a real number is "
                                        "required, not ", arg->TypeName()));
        }
        const long long n = arg->is_float() ? static_cast<long long>(arg->float_value())
                                            : static_cast<long long>(arg->int_value());
        if (conv == 'c') {
          AppendUtf8(static_cast<char32_t>(n), &piece);
          break;
        }
        const char c = conv == 'i' || conv == 'u' ? 'd' : conv;
        std::snprintf(buf, sizeof(buf), (spec + "ll" + std::string(1, c)).c_str(), n);
        piece = buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        if (!arg->is_number()) {
          return TypeError(absl::StrCat("must be real number, not ", arg->TypeName()));
        }
        std::snprintf(buf, sizeof(buf), (spec + std::string(1, conv)).c_str(),
                      arg->float_value());
        piece = buf;
        break;
      }
      default:
        return TypeError(absl::StrCat("unsupported format character '", std::string(1, conv),
                                      "'"));
    }
    out += piece;
  }
  if (!mapping && next < positional.size()) {
    return TypeError("not all arguments converted during string formatting");
  }
  return Value::String(std::move(out));
}

FilterFn FindFilter(absl::string_view name) {
  for (const auto& f : kFilters) {
    if (name == f.name) return f.fn;
  }
  return nullptr;
}

TestFn FindTest(absl::string_view name) {
  for (const auto& t : kTests) {
    if (name == t.name) return t.fn;
  }
  return nullptr;
}

}  // namespace tessera::jinja
