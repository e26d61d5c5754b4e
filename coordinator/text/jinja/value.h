// Jinja2 runtime values with Python semantics, for the chat-template interpreter.
//
// A Value is one of: Undefined (with the hint Jinja would raise when it is used), None, bool, int
// (int64), float (double), str (UTF-8, indexed by code point like Python; a str may be Markup,
// the result of |escape / |safe, which escapes what is added to it), a sequence (list, tuple, the
// dict views keys() / values() / items(), range(), or a one-shot generator as returned by
// |map / |select / |reverse ...: see SeqKind), dict
// (string keys, insertion order kept like a Python dict), namespace (the only mutable object, as
// in Jinja's sandbox), or a callable (macro, builtin, bound method, loop). Conversions follow
// Python exactly where templates can observe them: str() / repr() of containers and floats,
// truthiness, ==, json.dumps (used by HF's tojson filter).
//
// Thread safety: Values share immutable heap data through shared_ptr; a Value may be read from
// several threads. Namespaces are mutable and belong to a single render.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tessera::jinja {

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFn = std::function<absl::StatusOr<Value>(Interpreter&, CallArgs&)>;

struct HeapData {
  virtual ~HeapData() = default;
};

// The Python type behind a sequence Value. Templates can observe it: repr ("dict_keys([...])",
// "range(0, 3)"), subscripting (views and generators are not subscriptable), len() and
// truthiness (a generator has no len() and is always true), JSON (only list/tuple serialise),
// and a generator is exhausted once iterated.
// kGroupTuple: |groupby's (grouper, list) namedtuple, a tuple with those two attributes.
enum class SeqKind : uint8_t { kList, kTuple, kGroupTuple, kDictKeys, kDictValues, kDictItems,
                               kRange, kGenerator };

class Value {
 public:
  enum class Type : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable,
  };

  Value() : type_(Type::kUndefined) {}
  static Value Undefined(std::string hint, bool unsafe = false);
  static Value None() { return Value(Type::kNone); }
  static Value Bool(bool b) {
    Value v(Type::kBool);
    v.i_ = b ? 1 : 0;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(Type::kInt);
    v.i_ = i;
    return v;
  }
  static Value Float(double f) {
    Value v(Type::kFloat);
    v.f_ = f;
    return v;
  }
  static Value String(std::string s);
  static Value Markup(std::string s);
  static Value List(std::vector<Value> items, bool tuple = false);
  static Value Sequence(std::vector<Value> items, SeqKind kind);
  static Value Range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step);
  // A generator whose body fails when iterated (Jinja's generator filters run lazily, so a bad
  // input only fails when the result is consumed).
  static Value FailedGenerator(absl::Status error);
  static Value Dict(std::vector<std::pair<std::string, Value>> items);
  static Value Namespace(std::vector<std::pair<std::string, Value>> items);
  static Value Callable(std::string name, NativeFn fn);
  static Value FromJson(const nlohmann::ordered_json& j);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::kUndefined; }
  bool is_none() const { return type_ == Type::kNone; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_int() const { return type_ == Type::kInt; }
  bool is_float() const { return type_ == Type::kFloat; }
  // Python's numbers.Number (bool included, as in Python).
  bool is_number() const {
    return type_ == Type::kInt || type_ == Type::kFloat || type_ == Type::kBool;
  }
  bool is_string() const { return type_ == Type::kString; }
  bool is_markup() const;
  // Any sequence (see SeqKind); is_plain_list(): a Python list.
  bool is_list() const { return type_ == Type::kList; }
  bool is_plain_list() const { return is_list() && seq_kind() == SeqKind::kList; }
  bool is_tuple() const;
  SeqKind seq_kind() const;
  // list / tuple / range: len() and subscripts; views have len() but no subscripts.
  bool is_subscriptable_seq() const;
  bool has_len() const;
  bool is_dict() const { return type_ == Type::kDict; }
  bool is_namespace() const { return type_ == Type::kNamespace; }
  bool is_callable() const { return type_ == Type::kCallable; }

  bool bool_value() const { return i_ != 0; }
  int64_t int_value() const { return i_; }  // int or bool
  double float_value() const { return type_ == Type::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& str() const;
  const std::vector<Value>& list() const;
  // Iterating: a generator yields its items once, then nothing (Python's exhausted iterator).
  std::vector<Value> Consume() const;
  // range(start, stop, step) of a SeqKind::kRange value.
  void range_args(int64_t* start, int64_t* stop, int64_t* step) const;
  // The error a FailedGenerator raises when iterated; OK otherwise.
  absl::Status deferred_error() const;
  // list.pop / list.clear (allowed by Jinja's immutable sandbox): mutate the shared list.
  std::vector<Value>& mutable_list() const;
  const std::vector<std::pair<std::string, Value>>& dict() const;  // dict or namespace items
  std::vector<std::pair<std::string, Value>>& mutable_namespace() const;
  const std::string& callable_name() const;
  const NativeFn& callable_fn() const;
  // The message Jinja raises when this Undefined is used (UndefinedError / SecurityError).
  const std::string& undefined_hint() const;
  bool undefined_unsafe() const;

  // dict / namespace lookup; nullptr when absent.
  const Value* Find(absl::string_view key) const;

  bool Truthy() const;
  // Python str(): strings verbatim, Undefined -> "", containers as repr.
  std::string Str() const;
  void AppendStr(std::string* out) const;
  // Python repr().
  void AppendRepr(std::string* out) const;
  // Jinja's object_type_repr for error messages: "dict object", "None", ...
  std::string TypeRepr() const;
  // Python type name: "str", "int", "dict", "NoneType", ...
  std::string TypeName() const;

 private:
  explicit Value(Type t) : type_(t) {}
  Type type_;
  union {
    int64_t i_ = 0;
    double f_;
  };
  std::shared_ptr<HeapData> heap_;
};

// Python ==.
bool Equals(const Value& a, const Value& b);

struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // None -> compact single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// Python json.dumps(value, ...). Fails like Python for values JSON cannot hold.
absl::Status DumpJson(const Value& v, const JsonOptions& options, std::string* out);

// Python float repr (shortest round trip): 1.0, 1e-05, 1e+16, inf, nan.
std::string FormatFloat(double d);
// Python repr of a str.
void AppendStringRepr(absl::string_view s, std::string* out);

// UTF-8 helpers (Python str semantics work on code points).
std::vector<char32_t> DecodeUtf8(absl::string_view s);
void AppendUtf8(char32_t c, std::string* out);
size_t CodePointCount(absl::string_view s);
bool IsPyWhitespace(char32_t c);

}  // namespace tessera::jinja
