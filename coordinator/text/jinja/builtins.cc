#include "coordinator/text/jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/text/jinja/errors.h"
#include "coordinator/text/jinja/interpreter.h"
#include "coordinator/text/jinja/parser.h"
#include "coordinator/text/jinja/text_format.h"
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
        out.push_back(Encode(cps, i, n));  // the rest, trailing whitespace kept
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
      out.push_back(Encode(cps, 0, e));  // the rest, leading whitespace kept
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

// str.center / ljust / rjust (width in code points; center puts the odd extra pad on the left
// when the width is odd, as CPython does).
std::string PyJustify(const std::string& s, absl::string_view how, int64_t width,
                      const std::string& fill) {
  const int64_t len = static_cast<int64_t>(CodePointCount(s));
  if (width <= len) return s;
  const int64_t pad = width - len;
  int64_t left = 0;
  if (how == "center") {
    left = pad / 2 + (pad & width & 1);
  } else if (how == "rjust") {
    left = pad;
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < pad; ++i) out += fill;
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

absl::StatusOr<Value> StrMethod(Interpreter& in, const Value& self, absl::string_view name,
                                CallArgs& args) {
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
    if (sep.empty()) return ValueError("empty separator");
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
    if (name == "lower") return Value::String(PyLower(s));
    if (name == "upper") return Value::String(PyUpper(s));
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
      if (name == "index" || name == "rindex") return ValueError("substring not found");
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
    if (name == "islower") return Value::Bool(PyIsLower(s));
    if (name == "isupper") return Value::Bool(PyIsUpper(s));
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
  if (name == "zfill") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"width"}));
    ASSIGN_OR_RETURN(int64_t width, IntArg(name, a[0], 0));
    std::vector<char32_t> cps = DecodeUtf8(s);
    if (static_cast<int64_t>(cps.size()) >= width) return self;
    const size_t fill = static_cast<size_t>(width) - cps.size();
    const bool sign = !cps.empty() && (cps[0] == '+' || cps[0] == '-');
    return Value::String((sign ? Encode(cps, 0, 1) : "") + std::string(fill, '0') +
                         Encode(cps, sign ? 1 : 0, cps.size()));
  }
  if (name == "center" || name == "ljust" || name == "rjust") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"width", "fillchar"}));
    ASSIGN_OR_RETURN(int64_t width, IntArg(name, a[0], 0));
    std::string fill = " ";
    if (Given(a[1])) {
      if (!a[1].is_string() || CodePointCount(a[1].str()) != 1) {
        return TypeError("The fill character must be exactly one character long");
      }
      fill = a[1].str();
    }
    return Value::String(PyJustify(s, name, width, fill));
  }
  if (name == "partition" || name == "rpartition") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"sep"}));
    ASSIGN_OR_RETURN(std::string sep, StrArg(name, a[0]));
    if (sep.empty()) return ValueError("empty separator");
    const size_t f = name == "partition" ? s.find(sep) : s.rfind(sep);
    std::vector<Value> parts;
    if (f == std::string::npos) {
      parts = name == "partition"
                  ? std::vector<Value>{self, Value::String(""), Value::String("")}
                  : std::vector<Value>{Value::String(""), Value::String(""), self};
    } else {
      parts = {Value::String(s.substr(0, f)), Value::String(sep),
               Value::String(s.substr(f + sep.size()))};
    }
    return Value::List(std::move(parts), /*tuple=*/true);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"affix"}));
    ASSIGN_OR_RETURN(std::string affix, StrArg(name, a[0]));
    if (name == "removeprefix" && absl::StartsWith(s, affix)) {
      return Value::String(s.substr(affix.size()));
    }
    if (name == "removesuffix" && !affix.empty() && absl::EndsWith(s, affix)) {
      return Value::String(s.substr(0, s.size() - affix.size()));
    }
    return self;
  }
  if (name == "casefold") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {}));
    (void)a;
    return Value::String(PyLower(s));
  }
  if (name == "expandtabs") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"tabsize"}));
    ASSIGN_OR_RETURN(int64_t tabsize, IntArg(name, a[0], 8));
    std::string out;
    int64_t col = 0;
    for (char32_t c : DecodeUtf8(s)) {
      if (c == '\t') {
        const int64_t spaces = tabsize > 0 ? tabsize - col % tabsize : 0;
        out.append(static_cast<size_t>(spaces), ' ');
        col += spaces;
      } else {
        AppendUtf8(c, &out);
        col = (c == '\n' || c == '\r') ? 0 : col + 1;
      }
    }
    return Value::String(std::move(out));
  }
  if (name == "format") {
    // str.format: automatic / numbered / named fields, [key] and .attr lookups, !r / !s / !a
    // conversions and format specs.
    std::string out;
    size_t auto_index = 0;
    bool manual = false;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if ((c == '{' || c == '}') && i + 1 < s.size() && s[i + 1] == c) {
        out.push_back(c);
        ++i;
        continue;
      }
      if (c == '}') return ValueError("Single '}' encountered in format string");
      if (c != '{') {
        out.push_back(c);
        continue;
      }
      const size_t close = s.find('}', i);
      if (close == std::string::npos) return ValueError("Single '{' encountered in format string");
      std::string field = s.substr(i + 1, close - i - 1);
      std::string spec;
      char conversion = '\0';
      if (const size_t colon = field.find(':'); colon != std::string::npos) {
        spec = field.substr(colon + 1);
        field.resize(colon);
      }
      if (const size_t bang = field.find('!'); bang != std::string::npos) {
        if (bang + 2 != field.size() || std::strchr("rsa", field[bang + 1]) == nullptr) {
          return ValueError("Unknown conversion specifier in format string");
        }
        conversion = field[bang + 1];
        field.resize(bang);
      }
      const size_t name_end = std::min(field.find_first_of(".["), field.size());
      const std::string arg_name = field.substr(0, name_end);
      Value v;
      if (arg_name.empty() || std::all_of(arg_name.begin(), arg_name.end(), ::isdigit)) {
        if (arg_name.empty() ? manual : auto_index > 0) {
          return ValueError("cannot switch from manual field specification to automatic field "
                            "numbering");
        }
        manual = !arg_name.empty();
        const size_t idx = arg_name.empty() ? auto_index++ : std::stoul(arg_name);
        if (idx >= args.positional.size()) {
          return ValueError(absl::StrCat("Replacement index ", idx,
                                         " out of range for positional args tuple"));
        }
        v = args.positional[idx];
      } else {
        bool found = false;
        for (const auto& kv : args.keyword) {
          if (kv.first == arg_name) {
            v = kv.second;
            found = true;
          }
        }
        if (!found) return ValueError(absl::StrCat("'", arg_name, "'"));
      }
      // .attr and [key] lookups
      size_t p = name_end;
      while (p < field.size()) {
        if (field[p] == '.') {
          const size_t e = std::min(field.find_first_of(".[", p + 1), field.size());
          ASSIGN_OR_RETURN(v, in.GetAttr(v, field.substr(p + 1, e - p - 1)));
          p = e;
        } else {
          const size_t e = field.find(']', p);
          if (e == std::string::npos) return ValueError("Missing ']' in format string");
          const std::string key = field.substr(p + 1, e - p - 1);
          const bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit);
          ASSIGN_OR_RETURN(v, in.GetItem(v, numeric ? Value::Int(std::stoll(key))
                                                    : Value::String(key)));
          if (v.is_undefined()) return ValueError(absl::StrCat("'", key, "'"));
          p = e + 1;
        }
      }
      if (conversion == 'r' || conversion == 'a') {
        std::string r;
        v.AppendRepr(&r);
        v = Value::String(std::move(r));
      } else if (conversion == 's') {
        v = Value::String(v.Str());
      }
      ASSIGN_OR_RETURN(std::string piece, FormatWithSpec(v, spec));
      out += piece;
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
    if (name == "copy") return Value::Dict(self.dict());
    if (name == "items") return Value::Sequence(DictItems(self).list(), SeqKind::kDictItems);
    std::vector<Value> items;
    for (const auto& kv : self.dict()) {
      items.push_back(name == "keys" ? Value::String(kv.first) : kv.second);
    }
    return Value::Sequence(std::move(items),
                           name == "keys" ? SeqKind::kDictKeys : SeqKind::kDictValues);
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
    if (name == "index") return ValueError("value is not in list");
    return Value::Int(n);
  }
  if (name == "copy") return Value::List(self.list(), self.is_tuple());
  // Jinja's immutable sandbox refuses append/extend/insert/remove/sort/reverse but not these.
  if (name == "pop") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {"index"}));
    std::vector<Value>& items = self.mutable_list();
    if (items.empty()) return ValueError("pop from empty list");
    ASSIGN_OR_RETURN(int64_t i, IntArg(name, a[0], -1));
    const int64_t n = static_cast<int64_t>(items.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return ValueError("pop index out of range");
    Value v = items[static_cast<size_t>(i)];
    items.erase(items.begin() + i);
    return v;
  }
  if (name == "clear") {
    ASSIGN_OR_RETURN(auto a, Bind(name, args, {}));
    (void)a;
    self.mutable_list().clear();
    return Value::None();
  }
  return absl::NotFoundError("");
}

bool IsStrMethod(absl::string_view n) {
  static const char* const kNames[] = {
      "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "replace",
      "lower", "upper", "title", "capitalize", "swapcase", "find", "rfind", "index", "rindex",
      "count", "splitlines", "join", "isdigit", "isalpha", "isalnum", "isspace", "islower",
      "isupper", "format", "zfill", "center", "ljust", "rjust", "partition", "rpartition",
      "removeprefix", "removesuffix", "casefold", "expandtabs"};
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
  // next(iter(reversed(seq))): a generator is not reversible.
  if (v.seq_kind() == SeqKind::kGenerator) {
    return TypeError("'generator' object is not reversible");
  }
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
  return Value::String(PyLower(v.Str()));
}
absl::StatusOr<Value> FUpper(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(PyUpper(v.Str()));
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
  return v.is_markup() ? v : Value::Markup(v.Str());
}

// escape: Markup passes unchanged; forceescape escapes Markup's text again.
absl::StatusOr<Value> FEscape(Interpreter&, const Value& v, CallArgs&) {
  return v.is_markup() ? v : Value::Markup(HtmlEscape(v.Str()));
}
absl::StatusOr<Value> FForceEscape(Interpreter&, const Value& v, CallArgs&) {
  return Value::Markup(HtmlEscape(v.Str()));
}

absl::StatusOr<Value> FIndent(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("indent", args, {"width", "first", "blank"}));
  // Jinja appends "\n" to the value and calls splitlines(): only strings work.
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_string()) {
    return TypeError(absl::StrCat("indent: '", v.TypeName(), "' object is not a string"));
  }
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
  if (!case_sensitive && k.is_string()) return Value::String(PyLower(k.str()));
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
  return Value::Sequence(std::move(out), SeqKind::kGenerator);
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
  if (a[2].is_string() && a[2].str().find(',') != std::string::npos) {
    // attribute="a,b": sort by the tuple of attributes (make_multi_attrgetter).
    std::vector<std::pair<Value, size_t>> keyed;
    for (size_t i = 0; i < items.size(); ++i) {
      std::vector<Value> parts;
      for (absl::string_view part : absl::StrSplit(a[2].str(), ',')) {
        ASSIGN_OR_RETURN(Value k, SortKey(in, items[i], Value::String(std::string(part)),
                                          a[1].Truthy()));
        parts.push_back(std::move(k));
      }
      keyed.emplace_back(Value::List(std::move(parts)), i);
    }
    std::vector<Value> keys;
    for (auto& [k, i] : keyed) keys.push_back(k);
    ASSIGN_OR_RETURN(std::vector<Value> order,
                     SortValues(in, std::move(keys), Value(), true, a[0].Truthy()));
    // SortValues is stable and returns keys; map them back through their positions.
    std::vector<Value> out;
    std::vector<bool> used(items.size(), false);
    for (const Value& k : order) {
      for (size_t i = 0; i < keyed.size(); ++i) {
        if (!used[i] && &keyed[i].first.list() == &k.list()) {
          used[i] = true;
          out.push_back(items[keyed[i].second]);
          break;
        }
      }
    }
    return Value::List(std::move(out));
  }
  ASSIGN_OR_RETURN(items, SortValues(in, std::move(items), a[2], a[1].Truthy(), a[0].Truthy()));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FDictsort(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("dictsort", args, {"case_sensitive", "by", "reverse"}));
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_dict()) {
    return TypeError(absl::StrCat("'", v.TypeName(), "' object has no attribute 'items'"));
  }
  if (Given(a[1]) && !(a[1].is_string() && (a[1].str() == "key" || a[1].str() == "value"))) {
    return JinjaError(ErrorKind::kRuntime, "You can only sort by either \"key\" or \"value\"");
  }
  const bool by_value = a[1].is_string() && a[1].str() == "value";
  Value items = DictItems(v);
  ASSIGN_OR_RETURN(std::vector<Value> sorted,
                   SortValues(in, items.list(), Value::Int(by_value ? 1 : 0), a[0].Truthy(),
                              a[2].Truthy()));
  return Value::List(std::move(sorted));
}

// Strings reverse to strings; sequences and dicts to a reversed iterator (a generator here);
// iterators, which reversed() refuses, to a list.
absl::StatusOr<Value> FReverse(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_string()) {
    std::vector<char32_t> cps = DecodeUtf8(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::String(Encode(cps, 0, cps.size()));
  }
  const bool to_list = v.seq_kind() == SeqKind::kGenerator;
  absl::StatusOr<std::vector<Value>> iterated =
      (v.is_list() || v.is_dict() || v.is_undefined()) ? Iterate(v)
                                                      : TypeError("not iterable");
  if (!iterated.ok()) {
    if (ErrorKindOf(iterated.status()) != ErrorKind::kType) return iterated.status();
    return JinjaError(ErrorKind::kRuntime, "argument must be iterable");
  }
  std::vector<Value> items = std::move(*iterated);
  std::reverse(items.begin(), items.end());
  return to_list ? Value::List(std::move(items))
                 : Value::Sequence(std::move(items), SeqKind::kGenerator);
}

absl::StatusOr<Value> FRound(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("round", args, {"precision", "method"}));
  ASSIGN_OR_RETURN(int64_t precision, IntArg("round", a[0], 0));
  const std::string method = a[1].is_string() ? a[1].str() : "common";
  if (method != "common" && method != "ceil" && method != "floor") {
    return JinjaError(ErrorKind::kRuntime, "method must be common, ceil or floor");
  }
  if (!v.is_number()) {
    return TypeError(absl::StrCat("type ", v.TypeName(), " doesn't define __round__ method"));
  }
  if (method == "common") {
    if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
    // Python's round(x, n): correctly rounded (half to even on the exact binary value).
    const double x = v.float_value();
    if (!std::isfinite(x)) return v;
    if (precision >= 0) {
      char buf[512];
      std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::min<int64_t>(precision, 300)),
                    x);
      return Value::Float(std::strtod(buf, nullptr));
    }
    const double pow10 = std::pow(10.0, static_cast<double>(-precision));
    return Value::Float(std::nearbyint(x / pow10) * pow10);
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  double x = v.float_value() * scale;
  if (method == "ceil") {
    x = std::ceil(x);
  } else if (method == "floor") {
    x = std::floor(x);
  }
  return Value::Float(x / scale);
}

absl::StatusOr<Value> FAbs(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_float()) return Value::Float(std::fabs(v.float_value()));
  if (v.is_int() || v.is_bool()) return Value::Int(std::llabs(v.int_value()));
  return TypeError(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
}

// Removes "_" between digits (Python numeric literals in strings); nullopt when misplaced.
std::optional<std::string> StripDigitUnderscores(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '_') {
      out.push_back(s[i]);
      continue;
    }
    if (i == 0 || i + 1 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !(std::isxdigit(static_cast<unsigned char>(s[i - 1])) ||
          std::strchr("xXoObB", s[i - 1]) != nullptr)) {
      return std::nullopt;
    }
  }
  return out;
}

// Python int(s, base).
std::optional<int64_t> PyParseInt(const std::string& text, int64_t base) {
  std::optional<std::string> clean = StripDigitUnderscores(PyStrip(text, Value(), true, true));
  if (!clean || clean->empty() || base == 1 || base < 0 || base > 36) return std::nullopt;
  std::string s = *clean;
  bool neg = false;
  if (s[0] == '+' || s[0] == '-') {
    neg = s[0] == '-';
    s = s.substr(1);
  }
  if (s.size() > 1 && s[0] == '0' && std::strchr("xXoObB", s[1]) != nullptr) {
    const char p = static_cast<char>(std::tolower(s[1]));
    const int64_t prefix_base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
    if (base == 0 || base == prefix_base) {
      base = prefix_base;
      s = s.substr(2);
    }
  }
  if (base == 0) {
    if (s.size() > 1 && s[0] == '0' && s.find_first_not_of('0') != std::string::npos) {
      return std::nullopt;  // "012" is not a base-0 literal
    }
    base = 10;
  }
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long r = std::strtoll(s.c_str(), &end, static_cast<int>(base));
  if (end == nullptr || *end != '\0' || errno != 0 || s[0] == '+' || s[0] == '-' ||
      std::isspace(static_cast<unsigned char>(s[0]))) {
    return std::nullopt;
  }
  return neg ? -r : r;
}

// Python float(s).
std::optional<double> PyParseFloat(const std::string& text) {
  std::optional<std::string> clean = StripDigitUnderscores(PyStrip(text, Value(), true, true));
  if (!clean || clean->empty()) return std::nullopt;
  const std::string& s = *clean;
  const std::string body = (s[0] == '+' || s[0] == '-') ? s.substr(1) : s;
  const std::string lower = PyLower(body);
  if (lower == "inf" || lower == "infinity" || lower == "nan") {
    return std::strtod(s.c_str(), nullptr);
  }
  if (body.empty() || body.find_first_not_of("0123456789.eE+-") != std::string::npos) {
    return std::nullopt;
  }
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return d;
}

// |int: int(value) (strings in `base`), else int(float(value)), else the default.
absl::StatusOr<Value> FInt(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("int", args, {"default", "base"}));
  const Value def = Given(a[0]) ? a[0] : Value::Int(0);
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
  auto from_float = [&](double d) -> absl::StatusOr<Value> {
    if (std::isnan(d)) return def;
    if (std::isinf(d)) return ValueError("cannot convert float infinity to integer");
    if (std::fabs(d) >= 9.2e18) {
      return JinjaError(ErrorKind::kUnsupported, "integer does not fit in 64 bits");
    }
    return Value::Int(static_cast<int64_t>(d));
  };
  if (v.is_float()) return from_float(v.float_value());
  if (v.is_string()) {
    ASSIGN_OR_RETURN(int64_t base, IntArg("int", a[1], 10));
    if (std::optional<int64_t> r = PyParseInt(v.str(), base)) return Value::Int(*r);
    if (std::optional<double> d = PyParseFloat(v.str())) return from_float(*d);
  }
  return def;
}

absl::StatusOr<Value> FFloat(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("float", args, {"default"}));
  const Value def = Given(a[0]) ? a[0] : Value::Float(0.0);
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_number()) return Value::Float(v.float_value());
  if (v.is_string()) {
    if (std::optional<double> d = PyParseFloat(v.str())) return Value::Float(*d);
  }
  return def;
}

absl::StatusOr<Value> FItems(Interpreter&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::Sequence({}, SeqKind::kGenerator);
  if (!v.is_dict()) return TypeError("Can only get item pairs from a mapping.");
  return Value::Sequence(DictItems(v).list(), SeqKind::kGenerator);
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
    return Value::Sequence(std::move(out), SeqKind::kGenerator);
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
  return Value::Sequence(std::move(out), SeqKind::kGenerator);
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
  return Value::Sequence(std::move(out), SeqKind::kGenerator);
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
  if (!v.is_string()) {
    // len(s) <= length + leeway returns s unchanged; longer non-strings cannot be cut.
    ASSIGN_OR_RETURN(int64_t n, Length(v));
    if (n <= length + leeway) return v;
    return TypeError(absl::StrCat("can only concatenate ", v.TypeName(), " (not \"str\") to ",
                                  v.TypeName()));
  }
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
  return Value::Sequence(std::move(out), SeqKind::kGenerator);
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
    if (Given(a[0]) && !a[0].is_none()) {
      ASSIGN_OR_RETURN(x, GetPath(in, item, a[0]));
    }
    if (acc.is_string()) return TypeError("sum() can't sum strings [use ''.join(seq) instead]");
    ASSIGN_OR_RETURN(acc, Arith(BinOp::kAdd, acc, x));
  }
  return acc;
}

absl::StatusOr<Value> FAttr(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("attr", args, {"name"}));
  ASSIGN_OR_RETURN(std::string name, StrArg("attr", a[0]));
  if (v.is_undefined()) return UndefinedError(v);
  if (absl::StartsWith(name, "__") && absl::EndsWith(name, "__")) {
    return Value::Undefined(absl::StrCat("access to attribute '", name, "' of '", v.TypeName(),
                                         "' object is unsafe."),
                            /*unsafe=*/true);
  }
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

absl::StatusOr<Value> FCenter(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("center", args, {"width"}));
  ASSIGN_OR_RETURN(int64_t width, IntArg("center", a[0], 80));
  return Value::String(PyJustify(v.Str(), "center", width, " "));
}

absl::StatusOr<Value> FFilesizeformat(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("filesizeformat", args, {"binary"}));
  if (v.is_undefined()) return UndefinedError(v);
  double bytes;
  if (v.is_number()) {
    bytes = v.float_value();
  } else if (v.is_string() && PyParseFloat(v.str())) {
    bytes = *PyParseFloat(v.str());
  } else if (v.is_string()) {
    return ValueError(absl::StrCat("could not convert string to float: ", v.Str()));
  } else {
    return TypeError(absl::StrCat("float() argument must be a string or a real number, not '",
                                  v.TypeName(), "'"));
  }
  const bool binary = a[0].Truthy();
  const double base = binary ? 1024 : 1000;
  static const char* const kBinary[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  static const char* const kDecimal[] = {"kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
  if (bytes == 1) return Value::String("1 Byte");
  if (bytes < base) {
    return Value::String(absl::StrCat(static_cast<int64_t>(bytes), " Bytes"));
  }
  double unit = base;
  char buf[64];
  for (int i = 0; i < 8; ++i) {
    unit = std::pow(base, i + 2);
    if (bytes < unit || i == 7) {
      std::snprintf(buf, sizeof(buf), "%.1f %s", base * bytes / unit,
                    binary ? kBinary[i] : kDecimal[i]);
      break;
    }
  }
  return Value::String(buf);
}

// Jinja's make_attrgetter with a default: the attribute path, `def` when it is undefined,
// lower-cased strings unless case-sensitive.
absl::StatusOr<Value> GroupKey(Interpreter& in, const Value& item, const Value& attribute,
                               const Value& def, bool lower) {
  ASSIGN_OR_RETURN(Value k, GetPath(in, item, attribute));
  if (k.is_undefined() && Given(def)) k = def;
  if (lower && k.is_string()) k = Value::String(PyLower(k.str()));
  return k;
}

// groupby: sorted by the key, then consecutive equal keys grouped into (grouper, list) tuples.
absl::StatusOr<Value> FGroupby(Interpreter& in, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("groupby", args, {"attribute", "default", "case_sensitive"}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  const bool lower = !a[2].Truthy();
  std::vector<Value> keys;
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value k, GroupKey(in, item, a[0], a[1], lower));
    keys.push_back(std::move(k));
  }
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status err;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    absl::StatusOr<int> c = Compare(keys[x], keys[y], "<");
    if (!c.ok()) {
      err = c.status();
      return false;
    }
    return *c < 0;
  });
  RETURN_IF_ERROR(err);
  std::vector<Value> groups;
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    std::vector<Value> members;
    while (j < order.size() && Equals(keys[order[j]], keys[order[i]])) {
      members.push_back(items[order[j++]]);
    }
    Value grouper = keys[order[i]];
    if (lower) {
      ASSIGN_OR_RETURN(grouper, GroupKey(in, members[0], a[0], a[1], false));
    }
    std::vector<Value> pair;
    pair.push_back(std::move(grouper));
    pair.push_back(Value::List(std::move(members)));
    groups.push_back(Value::Sequence(std::move(pair), SeqKind::kGroupTuple));
    i = j;
  }
  return Value::List(std::move(groups));
}

absl::StatusOr<Value> FPprint(Interpreter&, const Value& v, CallArgs&) {
  return Value::String(PrettyRepr(v));
}

absl::StatusOr<Value> FSlice(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("slice", args, {"slices", "fill_with"}));
  ASSIGN_OR_RETURN(int64_t slices, IntArg("slice", a[0], 1));
  ASSIGN_OR_RETURN(std::vector<Value> seq, Iterate(v));
  if (slices <= 0) return Value::Sequence({}, SeqKind::kGenerator);
  const int64_t length = static_cast<int64_t>(seq.size());
  const int64_t per = length / slices;
  const int64_t extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t k = 0; k < slices; ++k) {
    const int64_t start = offset + k * per;
    if (k < extra) ++offset;
    const int64_t end = offset + (k + 1) * per;
    std::vector<Value> part(seq.begin() + start, seq.begin() + end);
    if (Given(a[1]) && !a[1].is_none() && k >= extra) part.push_back(a[1]);
    out.push_back(Value::List(std::move(part)));
  }
  return Value::Sequence(std::move(out), SeqKind::kGenerator);
}

absl::StatusOr<Value> FStriptags(Interpreter&, const Value& v, CallArgs&) {
  return Value::Markup(StripTags(v.Str()));
}

absl::StatusOr<Value> FUrlencode(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_string() || !(v.is_list() || v.is_dict() || v.is_undefined())) {
    return Value::String(UrlQuote(v.Str(), "/"));
  }
  auto quote_qs = [](const Value& x) {
    std::string q = UrlQuote(x.Str(), "");
    std::string out;
    for (size_t i = 0; i < q.size(); ++i) {
      if (q.compare(i, 3, "%20") == 0) {
        out.push_back('+');
        i += 2;
      } else {
        out.push_back(q[i]);
      }
    }
    return out;
  };
  std::vector<Value> items;
  if (v.is_dict()) {
    items = DictItems(v).list();
  } else {
    ASSIGN_OR_RETURN(items, Iterate(v));
  }
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(std::vector<Value> kv, Iterate(items[i]));
    if (kv.size() != 2) {
      return ValueError(absl::StrCat("too many values to unpack (expected 2)"));
    }
    if (i > 0) out.push_back('&');
    out += quote_qs(kv[0]) + "=" + quote_qs(kv[1]);
  }
  (void)in;
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FWordwrap(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("wordwrap", args, {"width", "break_long_words", "wrapstring",
                                                   "break_on_hyphens"}));
  ASSIGN_OR_RETURN(int64_t width, IntArg("wordwrap", a[0], 79));
  if (width <= 0) return ValueError(absl::StrCat("invalid width ", width, " (must be > 0)"));
  const bool break_long = Given(a[1]) ? a[1].Truthy() : true;
  const bool break_hyphens = Given(a[3]) ? a[3].Truthy() : true;
  const std::string wrap = a[2].is_string() ? a[2].str() : "\n";
  std::string out;
  bool first = true;
  for (const std::string& line : PySplitLines(v.Str(), false)) {
    if (!first) out += wrap;
    first = false;
    std::vector<std::string> wrapped = TextWrap(line, width, break_long, break_hyphens);
    for (size_t i = 0; i < wrapped.size(); ++i) {
      if (i > 0) out += wrap;
      out += wrapped[i];
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FXmlattr(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("xmlattr", args, {"autospace"}));
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_dict()) {
    return TypeError(absl::StrCat("'", v.TypeName(), "' object has no attribute 'items'"));
  }
  std::string out;
  for (const auto& [k, x] : v.dict()) {
    if (x.is_none() || x.is_undefined()) continue;
    if (k.find_first_of(" \t\n\r\f\v/>=") != std::string::npos) {
      std::string r;
      AppendStringRepr(k, &r);
      return ValueError(absl::StrCat("Invalid character in attribute name: ", r));
    }
    if (!out.empty()) out.push_back(' ');
    out += HtmlEscape(k) + "=\"" + (x.is_markup() ? x.str() : HtmlEscape(x.Str())) + "\"";
  }
  const bool autospace = Given(a[0]) ? a[0].Truthy() : true;
  if (autospace && !out.empty()) out = " " + out;
  return Value::String(std::move(out));
}

// Jinja's map / select / reject / selectattr / rejectattr / unique / batch / slice / items are
// generators: their body (and its errors) runs when the result is iterated. Ours run eagerly and
// keep a failure for the moment the result is consumed (raise_exception still fails at once).
template <FilterFn F>
absl::StatusOr<Value> Lazily(Interpreter& in, const Value& v, CallArgs& args) {
  absl::StatusOr<Value> r = F(in, v, args);
  if (r.ok() || ErrorKindOf(r.status()) == ErrorKind::kRaised) return r;
  return Value::FailedGenerator(r.status());
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};
const NamedFilter kFilters[] = {
    {"abs", FAbs},         {"attr", FAttr},           {"batch", Lazily<FBatch>},
    {"capitalize", FCapitalize}, {"center", FCenter}, {"count", FLength},  {"d", FDefault},
    {"default", FDefault}, {"dictsort", FDictsort},   {"e", FEscape},
    {"escape", FEscape},   {"first", FFirst},         {"float", FFloat},
    {"filesizeformat", FFilesizeformat},
    {"forceescape", FForceEscape}, {"format", FFormat},    {"groupby", FGroupby},
    {"indent", FIndent},
    {"int", FInt},
    {"items", Lazily<FItems>},     {"join", FJoin},           {"last", FLast},
    {"length", FLength},   {"list", FList},           {"lower", FLower},
    {"map", Lazily<FMap>},         {"max", FMax},             {"min", FMin},
    {"pprint", FPprint},
    {"reject", Lazily<FReject>},   {"rejectattr", Lazily<FRejectAttr>}, {"replace", FReplace},
    {"reverse", FReverse}, {"round", FRound},         {"safe", FSafe},
    {"select", Lazily<FSelect>},   {"selectattr", Lazily<FSelectAttr>}, {"slice", Lazily<FSlice>},
    {"sort", FSort},       {"string", FString},       {"striptags", FStriptags},
    {"sum", FSum},         {"title", FTitle},
    {"tojson", FJson},     {"trim", FTrim},           {"truncate", FTruncate},
    {"unique", Lazily<FUnique>},   {"upper", FUpper},         {"urlencode", FUrlencode},
    {"wordcount", FWordcount}, {"wordwrap", FWordwrap}, {"xmlattr", FXmlattr},
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
// Sized and indexable: str, list, tuple, range, dict (not dict views or generators).
TESSERA_JINJA_TEST(TSequence, v.is_undefined() || v.is_string() || v.is_subscriptable_seq() ||
                                  v.is_dict())
// Undefined defines __call__ (to raise), so Python's callable() is true for it.
TESSERA_JINJA_TEST(TCallable, v.is_callable() || v.is_undefined())
TESSERA_JINJA_TEST(TEscaped, v.is_markup())
TESSERA_JINJA_TEST(TLower, PyIsLower(v.Str()))
TESSERA_JINJA_TEST(TUpper, PyIsUpper(v.Str()))
#undef TESSERA_JINJA_TEST

// value % n == 0, with Python's % (so strings format, floats work, zero divides).
absl::StatusOr<bool> ModIsZero(const Value& v, const Value& n) {
  ASSIGN_OR_RETURN(Value r, Arith(BinOp::kMod, v, n));
  return Equals(r, Value::Int(0));
}
absl::StatusOr<bool> TOdd(Interpreter&, const Value& v, CallArgs&) {
  ASSIGN_OR_RETURN(Value r, Arith(BinOp::kMod, v, Value::Int(2)));
  return Equals(r, Value::Int(1));
}
absl::StatusOr<bool> TEven(Interpreter&, const Value& v, CallArgs&) {
  return ModIsZero(v, Value::Int(2));
}
absl::StatusOr<bool> TDivisibleBy(Interpreter&, const Value& v, CallArgs& args) {
  ASSIGN_OR_RETURN(Value n, OneArg("divisibleby", args));
  return ModIsZero(v, n);
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
  // Python's small ints, None, booleans and (interned) strings are the same objects.
  if (v.is_none() || v.is_bool() || v.is_int() || v.is_string()) return Equals(v, o);
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
  if (step == 0) return ValueError("range() arg 3 must not be zero");
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (out.size() >= 100000) {
      return ValueError(
          "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    out.push_back(Value::Int(i));
  }
  return Value::Range(std::move(out), start, stop, step);
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

// joiner(sep=", "): a callable returning "" the first time and `sep` afterwards.
absl::StatusOr<Value> GJoiner(Interpreter&, CallArgs& args) {
  ASSIGN_OR_RETURN(auto a, Bind("joiner", args, {"sep"}));
  const std::string sep = Given(a[0]) ? a[0].Str() : ", ";
  auto used = std::make_shared<bool>(false);
  return Value::Callable("joiner", [sep, used](Interpreter&, CallArgs&) -> absl::StatusOr<Value> {
    if (!*used) {
      *used = true;
      return Value::String("");
    }
    return Value::String(sep);
  });
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
      {"joiner", Value::Callable("joiner", GJoiner)},
      {"raise_exception", Value::Callable("raise_exception", GRaise)},
      {"strftime_now", Value::Callable("strftime_now", GStrftime)},
  };
  return *globals;
}

absl::StatusOr<Value> BoundMethod(const Value& obj, absl::string_view name) {
  const std::string n(name);
  if (obj.is_string()) {
    if (!IsStrMethod(name)) return absl::NotFoundError("");
    return Value::Callable(n, [obj, n](Interpreter& in, CallArgs& args) {
      return StrMethod(in, obj, n, args);
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
  if (obj.is_plain_list() || obj.is_tuple() || obj.seq_kind() == SeqKind::kRange) {
    if (name == "index" || name == "count" ||
        (obj.is_plain_list() && (name == "copy" || name == "pop" || name == "clear"))) {
      return Value::Callable(n, [obj, n](Interpreter&, CallArgs& args) {
        return ListMethod(obj, n, args);
      });
    }
    if (obj.is_plain_list() && (name == "append" || name == "extend" || name == "insert" ||
                                name == "remove" || name == "sort" || name == "reverse")) {
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
  } else {
    positional.push_back(args);  // a mapping is also the single argument of a plain '%s'
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
        if (conv == 'c' && arg->is_string()) {
          if (CodePointCount(arg->str()) != 1) return TypeError("%c requires int or char");
          piece = arg->str();
          break;
        }
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
  // Python skips this check when the argument is a non-tuple object with __getitem__
  // ('%s' % [1] formats the list; 'a' % [] is 'a').
  const bool indexable = args.is_list() && !args.is_tuple() && args.is_subscriptable_seq();
  if (!mapping && !indexable && next < positional.size()) {
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
