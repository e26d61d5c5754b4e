#include "coordinator/text/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#ifdef TESSERA_HAVE_ICU
#include <unicode/uchar.h>
#endif

#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/errors.h"

namespace tessera::jinja {
namespace {

struct StringData : HeapData {
  std::string s;
  bool markup = false;
};
struct ListData : HeapData {
  std::vector<Value> items;
  SeqKind kind = SeqKind::kList;
  bool consumed = false;  // kGenerator: already iterated
  int64_t start = 0, stop = 0, step = 1;  // kRange
  absl::Status error;                     // kGenerator: raised when iterated
};
struct DictData : HeapData {
  std::vector<std::pair<std::string, Value>> items;
};
struct CallableData : HeapData {
  std::string name;
  NativeFn fn;
};
struct UndefinedData : HeapData {
  std::string hint;
  bool unsafe = false;
};

const std::string& EmptyString() {
  static const std::string* s = new std::string();
  return *s;
}
const std::vector<Value>& EmptyList() {
  static const std::vector<Value>* l = new std::vector<Value>();
  return *l;
}
const std::vector<std::pair<std::string, Value>>& EmptyDict() {
  static const auto* d = new std::vector<std::pair<std::string, Value>>();
  return *d;
}

// Python's str.isprintable() per code point: not Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs (space excepted).
bool IsPrintable(char32_t c) {
  if (c < 0x20 || c == 0x7f) return false;
  if (c < 0x7f) return true;
#ifdef TESSERA_HAVE_ICU
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_SURROGATE:
    case U_PRIVATE_USE_CHAR:
    case U_UNASSIGNED:
    case U_LINE_SEPARATOR:
    case U_PARAGRAPH_SEPARATOR:
    case U_SPACE_SEPARATOR:
      return false;
    default:
      return true;
  }
#endif
  if (c >= 0x80 && c <= 0xa0) return false;
  if (c == 0xad) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) ||
      (c >= 0x205f && c <= 0x2064) || c == 0x3000 || c == 0xfeff) {
    return false;
  }
  if (c >= 0xd800 && c <= 0xdfff) return false;
  if (c >= 0xe000 && c <= 0xf8ff) return false;  // private use (Co)
  if (c == 0xfff9 || c == 0xfffa || c == 0xfffb) return false;
  return true;
}

void AppendJsonString(absl::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    // Copy runs of characters that need no escaping in one append.
    size_t run = i;
    while (run < s.size()) {
      const unsigned char r = static_cast<unsigned char>(s[run]);
      if (r < 0x20 || r == '"' || r == '\\' || (ensure_ascii && r >= 0x7f)) break;
      ++run;
    }
    if (run > i) {
      out->append(s.data() + i, run - i);
      i = run;
      if (i >= s.size()) break;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out->append("\\\""); continue;
      case '\\': out->append("\\\\"); continue;
      case '\n': out->append("\\n"); continue;
      case '\r': out->append("\\r"); continue;
      case '\t': out->append("\\t"); continue;
      case '\b': out->append("\\b"); continue;
      case '\f': out->append("\\f"); continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out->append(buf);
    } else if (c >= 0x80 && ensure_ascii) {
      // Decode one code point and write \uXXXX (surrogate pairs above the BMP).
      size_t len = (c >= 0xf0) ? 4 : (c >= 0xe0) ? 3 : 2;
      std::vector<char32_t> cps = DecodeUtf8(s.substr(i, len));
      char32_t cp = cps.empty() ? 0xfffd : cps[0];
      char buf[16];
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xd800 + (cp >> 10),
                      0xdc00 + (cp & 0x3ff));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      }
      out->append(buf);
      i += len - 1;
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back('"');
}

absl::Status DumpJsonImpl(const Value& v, const JsonOptions& o, int depth, std::string* out) {
  auto newline = [&](int d) {
    if (!o.indent) return;
    out->push_back('\n');
    for (int i = 0; i < d; ++i) out->append(*o.indent);
  };
  switch (v.type()) {
    case Value::Type::kNone: out->append("null"); return absl::OkStatus();
    case Value::Type::kBool: out->append(v.bool_value() ? "true" : "false");
      return absl::OkStatus();
    case Value::Type::kInt: absl::StrAppend(out, v.int_value()); return absl::OkStatus();
    case Value::Type::kFloat: {
      double d = v.float_value();
      if (std::isnan(d)) {
        out->append("NaN");
      } else if (std::isinf(d)) {
        out->append(d > 0 ? "Infinity" : "-Infinity");
      } else {
        out->append(FormatFloat(d));
      }
      return absl::OkStatus();
    }
    case Value::Type::kString: AppendJsonString(v.str(), o.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Type::kList: {
      if (!v.is_plain_list() && !v.is_tuple()) {
        return TypeError(
            absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
      }
      const auto& items = v.list();
      if (items.empty()) {
        out->append("[]");
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(o.item_separator);
        newline(depth + 1);
        absl::Status s = DumpJsonImpl(items[i], o, depth + 1, out);
        if (!s.ok()) return s;
      }
      newline(depth);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Type::kDict: {
      const auto& items = v.dict();
      if (items.empty()) {
        out->append("{}");
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> order;
      order.reserve(items.size());
      for (const auto& kv : items) order.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(order.begin(), order.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t i = 0; i < order.size(); ++i) {
        if (i > 0) out->append(o.item_separator);
        newline(depth + 1);
        AppendJsonString(order[i]->first, o.ensure_ascii, out);
        out->append(o.key_separator);
        absl::Status s = DumpJsonImpl(order[i]->second, o, depth + 1, out);
        if (!s.ok()) return s;
      }
      newline(depth);
      out->push_back('}');
      return absl::OkStatus();
    }
    default:
      return TypeError(
          absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
  }
}

}  // namespace

Value Value::Undefined(std::string hint, bool unsafe) {
  Value v(Type::kUndefined);
  auto d = std::make_shared<UndefinedData>();
  d->hint = std::move(hint);
  d->unsafe = unsafe;
  v.heap_ = std::move(d);
  return v;
}

Value Value::String(std::string s) {
  Value v(Type::kString);
  auto d = std::make_shared<StringData>();
  d->s = std::move(s);
  v.heap_ = std::move(d);
  return v;
}

Value Value::Markup(std::string s) {
  Value v(Type::kString);
  auto d = std::make_shared<StringData>();
  d->s = std::move(s);
  d->markup = true;
  v.heap_ = std::move(d);
  return v;
}

Value Value::List(std::vector<Value> items, bool tuple) {
  return Sequence(std::move(items), tuple ? SeqKind::kTuple : SeqKind::kList);
}

Value Value::Sequence(std::vector<Value> items, SeqKind kind) {
  Value v(Type::kList);
  auto d = std::make_shared<ListData>();
  d->items = std::move(items);
  d->kind = kind;
  v.heap_ = std::move(d);
  return v;
}

Value Value::FailedGenerator(absl::Status error) {
  Value v = Sequence({}, SeqKind::kGenerator);
  static_cast<ListData*>(v.heap_.get())->error = std::move(error);
  return v;
}

void Value::range_args(int64_t* start, int64_t* stop, int64_t* step) const {
  const auto* d = static_cast<const ListData*>(heap_.get());
  *start = d->start;
  *stop = d->stop;
  *step = d->step;
}

absl::Status Value::deferred_error() const {
  if (type_ != Type::kList) return absl::OkStatus();
  return static_cast<const ListData*>(heap_.get())->error;
}

Value Value::Range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step) {
  Value v = Sequence(std::move(items), SeqKind::kRange);
  auto* d = static_cast<ListData*>(v.heap_.get());
  d->start = start;
  d->stop = stop;
  d->step = step;
  return v;
}

Value Value::Dict(std::vector<std::pair<std::string, Value>> items) {
  Value v(Type::kDict);
  auto d = std::make_shared<DictData>();
  d->items = std::move(items);
  v.heap_ = std::move(d);
  return v;
}

Value Value::Namespace(std::vector<std::pair<std::string, Value>> items) {
  Value v = Dict(std::move(items));
  v.type_ = Type::kNamespace;
  return v;
}

Value Value::Callable(std::string name, NativeFn fn) {
  Value v(Type::kCallable);
  auto d = std::make_shared<CallableData>();
  d->name = std::move(name);
  d->fn = std::move(fn);
  v.heap_ = std::move(d);
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Int(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return String(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(FromJson(e));
      return List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<std::string, Value>> items;
      items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        items.emplace_back(it.key(), FromJson(it.value()));
      }
      return Dict(std::move(items));
    }
    default: return None();
  }
}

bool Value::is_tuple() const {
  if (type_ != Type::kList) return false;
  const SeqKind k = static_cast<const ListData*>(heap_.get())->kind;
  return k == SeqKind::kTuple || k == SeqKind::kGroupTuple;
}
bool Value::is_markup() const {
  return type_ == Type::kString && static_cast<const StringData*>(heap_.get())->markup;
}
SeqKind Value::seq_kind() const {
  return type_ == Type::kList ? static_cast<const ListData*>(heap_.get())->kind : SeqKind::kList;
}
bool Value::is_subscriptable_seq() const {
  if (type_ != Type::kList) return false;
  const SeqKind k = seq_kind();
  return k == SeqKind::kList || is_tuple() || k == SeqKind::kRange;
}
bool Value::has_len() const {
  return type_ == Type::kString || type_ == Type::kDict ||
         (type_ == Type::kList && seq_kind() != SeqKind::kGenerator);
}
std::vector<Value> Value::Consume() const {
  if (type_ != Type::kList) return {};
  auto* d = static_cast<ListData*>(heap_.get());
  if (d->kind != SeqKind::kGenerator) return d->items;
  if (d->consumed) return {};
  d->consumed = true;
  return d->items;
}
std::vector<Value>& Value::mutable_list() const {
  return static_cast<ListData*>(heap_.get())->items;
}
const std::string& Value::str() const {
  if (type_ != Type::kString) return EmptyString();
  return static_cast<const StringData*>(heap_.get())->s;
}
const std::vector<Value>& Value::list() const {
  if (type_ != Type::kList) return EmptyList();
  return static_cast<const ListData*>(heap_.get())->items;
}
const std::vector<std::pair<std::string, Value>>& Value::dict() const {
  if (type_ != Type::kDict && type_ != Type::kNamespace) return EmptyDict();
  return static_cast<const DictData*>(heap_.get())->items;
}
std::vector<std::pair<std::string, Value>>& Value::mutable_namespace() const {
  return static_cast<DictData*>(heap_.get())->items;
}
const std::string& Value::callable_name() const {
  return static_cast<const CallableData*>(heap_.get())->name;
}
const NativeFn& Value::callable_fn() const {
  return static_cast<const CallableData*>(heap_.get())->fn;
}
const std::string& Value::undefined_hint() const {
  if (!heap_) return EmptyString();
  return static_cast<const UndefinedData*>(heap_.get())->hint;
}
bool Value::undefined_unsafe() const {
  return heap_ && static_cast<const UndefinedData*>(heap_.get())->unsafe;
}

const Value* Value::Find(absl::string_view key) const {
  if (type_ != Type::kDict && type_ != Type::kNamespace) return nullptr;
  for (const auto& kv : static_cast<const DictData*>(heap_.get())->items) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

bool Value::Truthy() const {
  switch (type_) {
    case Type::kUndefined:
    case Type::kNone: return false;
    case Type::kBool:
    case Type::kInt: return i_ != 0;
    case Type::kFloat: return f_ != 0.0;
    case Type::kString: return !str().empty();
    case Type::kList: return seq_kind() == SeqKind::kGenerator || !list().empty();
    case Type::kDict: return !dict().empty();
    default: return true;
  }
}

std::string Value::Str() const {
  if (type_ == Type::kString) return str();
  std::string out;
  AppendStr(&out);
  return out;
}

void Value::AppendStr(std::string* out) const {
  switch (type_) {
    case Type::kUndefined: return;
    case Type::kString: out->append(str()); return;
    default: AppendRepr(out);
  }
}

void Value::AppendRepr(std::string* out) const {
  switch (type_) {
    case Type::kUndefined: out->append("Undefined"); return;
    case Type::kNone: out->append("None"); return;
    case Type::kBool: out->append(i_ ? "True" : "False"); return;
    case Type::kInt: absl::StrAppend(out, i_); return;
    case Type::kFloat: out->append(FormatFloat(f_)); return;
    case Type::kString: AppendStringRepr(str(), out); return;
    case Type::kList: {
      const bool tuple = is_tuple();
      const char* wrap = nullptr;
      switch (seq_kind()) {
        case SeqKind::kRange: {
          const auto* d = static_cast<const ListData*>(heap_.get());
          absl::StrAppend(out, "range(", d->start, ", ", d->stop);
          if (d->step != 1) absl::StrAppend(out, ", ", d->step);
          out->push_back(')');
          return;
        }
        case SeqKind::kGenerator: out->append("<generator object>"); return;
        case SeqKind::kDictKeys: wrap = "dict_keys("; break;
        case SeqKind::kDictValues: wrap = "dict_values("; break;
        case SeqKind::kDictItems: wrap = "dict_items("; break;
        default: break;
      }
      if (wrap != nullptr) out->append(wrap);
      out->push_back(tuple ? '(' : '[');
      const auto& items = list();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(", ");
        items[i].AppendRepr(out);
      }
      if (tuple && items.size() == 1) out->push_back(',');
      out->push_back(tuple ? ')' : ']');
      if (wrap != nullptr) out->push_back(')');
      return;
    }
    case Type::kDict:
    case Type::kNamespace: {
      if (type_ == Type::kNamespace) out->append("<Namespace ");
      out->push_back('{');
      bool first = true;
      for (const auto& kv : dict()) {
        if (!first) out->append(", ");
        first = false;
        AppendStringRepr(kv.first, out);
        out->append(": ");
        kv.second.AppendRepr(out);
      }
      out->push_back('}');
      if (type_ == Type::kNamespace) out->push_back('>');
      return;
    }
    case Type::kCallable:
      absl::StrAppend(out, "<function ", callable_name(), ">");
      return;
  }
}

std::string Value::TypeName() const {
  switch (type_) {
    case Type::kUndefined: return "Undefined";
    case Type::kNone: return "NoneType";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kFloat: return "float";
    case Type::kString: return "str";
    case Type::kList:
      switch (seq_kind()) {
        case SeqKind::kTuple:
        case SeqKind::kGroupTuple: return "tuple";
        case SeqKind::kDictKeys: return "dict_keys";
        case SeqKind::kDictValues: return "dict_values";
        case SeqKind::kDictItems: return "dict_items";
        case SeqKind::kRange: return "range";
        case SeqKind::kGenerator: return "generator";
        default: return "list";
      }
    case Type::kDict: return "dict";
    case Type::kNamespace: return "Namespace";
    case Type::kCallable: return "function";
  }
  return "object";
}

std::string Value::TypeRepr() const {
  if (type_ == Type::kNone) return "None";
  if (type_ == Type::kNamespace) return "jinja2.utils.Namespace object";
  return TypeName() + " object";
}

bool Equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.float_value() == b.float_value();
    return a.int_value() == b.int_value();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone: return true;
    case Value::Type::kString: return a.str() == b.str();
    case Value::Type::kList: {
      if (a.seq_kind() != b.seq_kind() && !(a.is_tuple() && b.is_tuple())) return false;
      if (a.seq_kind() == SeqKind::kGenerator) return &a.list() == &b.list();
      const auto& x = a.list();
      const auto& y = b.list();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!Equals(x[i], y[i])) return false;
      }
      return true;
    }
    case Value::Type::kDict: {
      const auto& x = a.dict();
      const auto& y = b.dict();
      if (x.size() != y.size()) return false;
      for (const auto& kv : x) {
        const Value* other = b.Find(kv.first);
        if (other == nullptr || !Equals(kv.second, *other)) return false;
      }
      return true;
    }
    case Value::Type::kNamespace: return &a.dict() == &b.dict();  // identity, like Python
    default: return false;
  }
}

absl::Status DumpJson(const Value& v, const JsonOptions& options, std::string* out) {
  return DumpJsonImpl(v, options, 0, out);
}

std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci: [-]D[.DDD]e[+-]XX
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  bool neg = !mant.empty() && mant[0] == '-';
  if (neg) mant = mant.substr(1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits.push_back(c);
  }
  std::string out = neg ? "-" : "";
  if (exp < -4 || exp >= 16) {
    out.push_back(digits[0]);
    if (digits.size() > 1) {
      out.push_back('.');
      out.append(digits.substr(1));
    }
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out.append(eb);
    return out;
  }
  if (exp < 0) {
    out.append("0.");
    out.append(static_cast<size_t>(-exp - 1), '0');
    out.append(digits);
    return out;
  }
  const size_t int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len) {
    out.append(digits);
    out.append(int_len - digits.size(), '0');
    out.append(".0");
  } else {
    out.append(digits.substr(0, int_len));
    out.push_back('.');
    out.append(digits.substr(int_len));
  }
  return out;
}

void AppendStringRepr(absl::string_view s, std::string* out) {
  const bool has_single = s.find('\'') != absl::string_view::npos;
  const bool has_double = s.find('"') != absl::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  out->push_back(quote);
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == '\\') {
        out->append("\\\\");
      } else if (c == static_cast<unsigned char>(quote)) {
        out->push_back('\\');
        out->push_back(quote);
      } else if (c == '\n') {
        out->append("\\n");
      } else if (c == '\r') {
        out->append("\\r");
      } else if (c == '\t') {
        out->append("\\t");
      } else if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\x%02x", c);
        out->append(buf);
      } else {
        out->push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    size_t len = (c >= 0xf0) ? 4 : (c >= 0xe0) ? 3 : 2;
    if (i + len > s.size()) len = s.size() - i;
    std::vector<char32_t> cps = DecodeUtf8(s.substr(i, len));
    char32_t cp = cps.empty() ? 0xfffd : cps[0];
    if (IsPrintable(cp)) {
      out->append(s.substr(i, len).data(), len);
    } else {
      char buf[16];
      if (cp <= 0xff) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(cp));
      } else if (cp <= 0xffff) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(cp));
      }
      out->append(buf);
    }
    i += len;
  }
  out->push_back(quote);
}

std::vector<char32_t> DecodeUtf8(absl::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    size_t len;
    if (c < 0x80) {
      cp = c;
      len = 1;
    } else if ((c >> 5) == 0x6) {
      cp = c & 0x1f;
      len = 2;
    } else if ((c >> 4) == 0xe) {
      cp = c & 0x0f;
      len = 3;
    } else if ((c >> 3) == 0x1e) {
      cp = c & 0x07;
      len = 4;
    } else {
      out.push_back(0xfffd);
      ++i;
      continue;
    }
    if (i + len > s.size()) {
      out.push_back(0xfffd);
      break;
    }
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += len;
  }
  return out;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
}

size_t CodePointCount(absl::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++n;
  }
  return n;
}

bool IsPyWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

}  // namespace tessera::jinja
