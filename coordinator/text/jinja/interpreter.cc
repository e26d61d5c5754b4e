#include "coordinator/text/jinja/interpreter.h"

#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/builtins.h"
#include "coordinator/text/jinja/errors.h"
#include "coordinator/text/jinja/parser.h"
#include "coordinator/text/jinja/text_format.h"
#include "kernels/base/status.h"

namespace tessera::jinja {
namespace {

constexpr int kMaxCallDepth = 200;

absl::Status Located(absl::Status status, int line, int column) {
  if (status.ok() || absl::StartsWith(status.message(), "template line ")) return status;
  return WithMessagePrefix(status, absl::StrCat("template line ", line, ", column ", column, ": "));
}

bool IsIntLike(const Value& v) { return v.is_int() || v.is_bool(); }

// Python integers are unbounded; ours are 64-bit (no chat template computes such numbers).
absl::Status IntegerOverflow() {
  return JinjaError(ErrorKind::kUnsupported,
                    "integer result does not fit in 64 bits (Python would compute it exactly)");
}

// The text a value contributes to Markup: unchanged when it is Markup, else escaped.
std::string MarkupText(const Value& v) {
  return v.is_markup() ? v.str() : HtmlEscape(v.Str());
}

}  // namespace

absl::StatusOr<Value> Arith(BinOp op, const Value& a, const Value& b) {
  static const char* const kSym[] = {"+", "-", "*", "/", "//", "%", "**"};
  const char* sym = kSym[static_cast<int>(op)];
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined() && !(op == BinOp::kMod && a.is_string())) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    const bool ints = IsIntLike(a) && IsIntLike(b);
    const double x = a.float_value();
    const double y = b.float_value();
    switch (op) {
      case BinOp::kAdd:
      case BinOp::kSub:
      case BinOp::kMul: {
        if (!ints) {
          return Value::Float(op == BinOp::kAdd ? x + y : op == BinOp::kSub ? x - y : x * y);
        }
        int64_t r;
        const bool overflow =
            op == BinOp::kAdd   ? __builtin_add_overflow(a.int_value(), b.int_value(), &r)
            : op == BinOp::kSub ? __builtin_sub_overflow(a.int_value(), b.int_value(), &r)
                                : __builtin_mul_overflow(a.int_value(), b.int_value(), &r);
        if (overflow) return IntegerOverflow();
        return Value::Int(r);
      }
      case BinOp::kDiv:
        if (y == 0) return ValueError(ints ? "division by zero" : "float division by zero");
        return Value::Float(x / y);
      case BinOp::kFloorDiv:
        if (ints) {
          if (b.int_value() == 0) return ValueError("integer division or modulo by zero");
          int64_t q = a.int_value() / b.int_value();
          if ((a.int_value() % b.int_value() != 0) && ((a.int_value() < 0) != (b.int_value() < 0))) --q;
          return Value::Int(q);
        }
        if (y == 0) return ValueError("float floor division by zero");
        return Value::Float(std::floor(x / y));
      case BinOp::kMod:
        if (ints) {
          if (b.int_value() == 0) return ValueError("integer division or modulo by zero");
          int64_t r = a.int_value() % b.int_value();
          if (r != 0 && ((r < 0) != (b.int_value() < 0))) r += b.int_value();
          return Value::Int(r);
        }
        if (y == 0) return ValueError("float modulo");
        {
          double r = std::fmod(x, y);
          if (r != 0 && ((r < 0) != (y < 0))) r += y;
          if (r == 0) r = std::copysign(0.0, y);  // Python: a zero result takes y's sign
          return Value::Float(r);
        }
      case BinOp::kPow:
        if (ints && b.int_value() >= 0) {
          int64_t r = 1;
          for (int64_t i = 0; i < b.int_value(); ++i) {
            if (__builtin_mul_overflow(r, a.int_value(), &r)) return IntegerOverflow();
            if (r == 0 || r == 1) break;
          }
          return Value::Int(r);
        }
        if (x == 0 && y < 0) {
          return ValueError("0.0 cannot be raised to a negative power");
        }
        return Value::Float(std::pow(x, y));
      default: break;
    }
  }
  if (op == BinOp::kAdd) {
    if (a.is_markup() && b.is_string()) {
      return Value::Markup(a.str() + MarkupText(b));  // Markup.__add__ escapes the other side
    }
    if (b.is_markup() && a.is_string()) return Value::Markup(MarkupText(a) + b.str());
    if (a.is_string() && b.is_string()) return Value::String(a.str() + b.str());
    if (a.is_list() && b.is_list() &&
        ((a.is_plain_list() && b.is_plain_list()) || (a.is_tuple() && b.is_tuple()))) {
      std::vector<Value> items = a.list();
      items.insert(items.end(), b.list().begin(), b.list().end());
      return Value::List(std::move(items), a.is_tuple());
    }
    if (a.is_string() || a.is_plain_list() || a.is_tuple()) {
      return TypeError(absl::StrCat("can only concatenate ", a.TypeName(), " (not \"",
                                    b.TypeName(), "\") to ", a.TypeName()));
    }
  }
  if (op == BinOp::kMul) {
    auto is_seq = [](const Value& v) { return v.is_string() || v.is_plain_list() || v.is_tuple(); };
    const Value* seq = is_seq(a) ? &a : is_seq(b) ? &b : nullptr;
    const Value* n = seq == &a ? &b : &a;
    if (seq != nullptr && IsIntLike(*n)) {
      const int64_t count = std::max<int64_t>(0, n->int_value());
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < count; ++i) out += seq->str();
        return seq->is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < count; ++i) {
        items.insert(items.end(), seq->list().begin(), seq->list().end());
      }
      return Value::List(std::move(items), seq->is_tuple());
    }
    if (seq != nullptr) {
      return TypeError(absl::StrCat("can't multiply sequence by non-int of type '",
                                    n->TypeName(), "'"));
    }
  }
  if (op == BinOp::kMod && a.is_markup()) {
    // Markup.__mod__ escapes the arguments.
    Value escaped;
    if (b.is_tuple()) {
      std::vector<Value> items;
      for (const Value& x : b.list()) items.push_back(Value::Markup(MarkupText(x)));
      escaped = Value::List(std::move(items), true);
    } else if (b.is_dict()) {
      std::vector<std::pair<std::string, Value>> items;
      for (const auto& [k, x] : b.dict()) items.emplace_back(k, Value::Markup(MarkupText(x)));
      escaped = Value::Dict(std::move(items));
    } else {
      escaped = Value::Markup(MarkupText(b));
    }
    ASSIGN_OR_RETURN(Value r, PercentFormat(a.str(), escaped));
    return Value::Markup(r.str());
  }
  if (op == BinOp::kMod && a.is_string()) return PercentFormat(a.str(), b);
  return TypeError(absl::StrCat("unsupported operand type(s) for ", sym, ": '", a.TypeName(),
                                "' and '", b.TypeName(), "'"));
}

namespace {

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::kUndefined: return false;
    case Value::Type::kString:
      if (!item.is_string()) {
        return TypeError(absl::StrCat("'in <string>' requires string as left operand, not ",
                                      item.TypeName()));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Type::kList:
      RETURN_IF_ERROR(container.deferred_error());
      // dict_keys is set-like: the item must be hashable.
      if (container.seq_kind() == SeqKind::kDictKeys &&
          (item.is_plain_list() || item.is_dict() || item.is_namespace())) {
        return TypeError(absl::StrCat("unhashable type: '", item.TypeName(), "'"));
      }
      for (const Value& v : container.Consume()) {
        if (Equals(v, item)) return true;
      }
      return false;
    case Value::Type::kDict:
      if (item.is_plain_list() || item.is_dict() || item.is_namespace()) {
        return TypeError(absl::StrCat("unhashable type: '", item.TypeName(), "'"));
      }
      if (!item.is_string()) return false;
      return container.Find(item.str()) != nullptr;
    default:
      return TypeError(absl::StrCat("argument of type '", container.TypeName(),
                                    "' is not iterable"));
  }
}

int64_t NormalizeIndex(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

absl::StatusOr<Value> SliceValue(const Value& v, const Value& start, const Value& stop,
                                 const Value& step) {
  auto as_opt = [](const Value& x, int64_t* out) -> absl::StatusOr<bool> {
    if (x.is_undefined() || x.is_none()) return false;
    if (!IsIntLike(x)) {
      return TypeError("slice indices must be integers or None or have an __index__ method");
    }
    *out = x.int_value();
    return true;
  };
  std::vector<char32_t> cps;
  int64_t n;
  if (v.is_string()) {
    cps = DecodeUtf8(v.str());
    n = static_cast<int64_t>(cps.size());
  } else if (v.is_subscriptable_seq()) {
    n = static_cast<int64_t>(v.list().size());
  } else if (v.is_undefined()) {
    return UndefinedError(v);
  } else if (v.is_dict()) {
    // Jinja compiles slices to a plain Python subscript (no sandbox getitem fallback).
    return TypeError("unhashable type: 'slice'");
  } else {
    return TypeError(absl::StrCat("'", v.TypeName(), "' object is not subscriptable"));
  }
  int64_t st = 1;
  ASSIGN_OR_RETURN(bool has_step, as_opt(step, &st));
  if (!has_step) st = 1;
  if (st == 0) return ValueError("slice step cannot be zero");
  int64_t lo = 0, hi = 0;
  ASSIGN_OR_RETURN(bool has_lo, as_opt(start, &lo));
  ASSIGN_OR_RETURN(bool has_hi, as_opt(stop, &hi));
  if (st > 0) {
    lo = has_lo ? (lo < 0 ? std::max<int64_t>(0, lo + n) : std::min(lo, n)) : 0;
    hi = has_hi ? (hi < 0 ? std::max<int64_t>(0, hi + n) : std::min(hi, n)) : n;
  } else {
    lo = has_lo ? (lo < 0 ? std::max<int64_t>(-1, lo + n) : std::min(lo, n - 1)) : n - 1;
    hi = has_hi ? (hi < 0 ? std::max<int64_t>(-1, hi + n) : std::min(hi, n - 1)) : -1;
  }
  std::vector<int64_t> idx;
  if (st > 0) {
    for (int64_t i = lo; i < hi; i += st) idx.push_back(i);
  } else {
    for (int64_t i = lo; i > hi; i += st) idx.push_back(i);
  }
  if (v.is_string()) {
    std::string out;
    for (int64_t i : idx) AppendUtf8(cps[static_cast<size_t>(i)], &out);
    return Value::String(std::move(out));
  }
  std::vector<Value> items;
  items.reserve(idx.size());
  for (int64_t i : idx) items.push_back(v.list()[static_cast<size_t>(i)]);
  if (v.seq_kind() == SeqKind::kRange) {  // a slice of a range is a range
    int64_t r_start, r_stop, r_step;
    v.range_args(&r_start, &r_stop, &r_step);
    return Value::Range(std::move(items), r_start + lo * r_step, r_start + hi * r_step,
                        r_step * st);
  }
  return Value::List(std::move(items), v.is_tuple());
}

// Python attributes whose name starts with "_" exist on every object (__class__, __len__, ...):
// the sandbox refuses them (an Undefined that raises SecurityError when used).
bool IsUnsafeAttribute(const Value& obj, absl::string_view name) {
  if (!absl::StartsWith(name, "__") || !absl::EndsWith(name, "__")) return false;
  return !(obj.is_dict() && obj.Find(name) != nullptr);
}

Value UnsafeUndefined(const Value& obj, absl::string_view name) {
  return Value::Undefined(absl::StrCat("access to attribute '", name, "' of '", obj.TypeName(),
                                       "' object is unsafe."),
                          /*unsafe=*/true);
}

}  // namespace

absl::Status UndefinedError(const Value& v) {
  return JinjaError(v.undefined_unsafe() ? ErrorKind::kSecurity : ErrorKind::kUndefined,
                    v.undefined_hint());
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return std::vector<Value>();
    case Value::Type::kList:
      RETURN_IF_ERROR(v.deferred_error());
      return v.Consume();
    case Value::Type::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.dict().size());
      for (const auto& kv : v.dict()) keys.push_back(Value::String(kv.first));
      return keys;
    }
    case Value::Type::kString: {
      std::vector<Value> chars;
      for (char32_t c : DecodeUtf8(v.str())) {
        std::string s;
        AppendUtf8(c, &s);
        chars.push_back(Value::String(std::move(s)));
      }
      return chars;
    }
    default:
      return TypeError(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined: return 0;
    case Value::Type::kString: return static_cast<int64_t>(CodePointCount(v.str()));
    case Value::Type::kList:
      if (!v.has_len()) break;
      return static_cast<int64_t>(v.list().size());
    case Value::Type::kDict: return static_cast<int64_t>(v.dict().size());
    default: break;
  }
  return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
}

absl::StatusOr<int> Compare(const Value& a, const Value& b, absl::string_view op) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.float_value(), y = b.float_value();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    return a.int_value() < b.int_value() ? -1 : a.int_value() > b.int_value() ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.str().compare(b.str());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() &&
      ((a.is_plain_list() && b.is_plain_list()) || (a.is_tuple() && b.is_tuple()))) {
    const auto& x = a.list();
    const auto& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (Equals(x[i], y[i])) continue;
      return Compare(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return TypeError(absl::StrCat("'", op, "' not supported between instances of '", a.TypeName(),
                                "' and '", b.TypeName(), "'"));
}

const Value* Interpreter::Frame::Find(absl::string_view name) const {
  for (const Frame* f = this; f != nullptr; f = f->parent) {
    for (const auto& kv : f->vars) {
      if (kv.first == name) return &kv.second;
    }
  }
  return nullptr;
}

void Interpreter::Frame::Set(absl::string_view name, Value v) {
  for (auto& kv : vars) {
    if (kv.first == name) {
      kv.second = std::move(v);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(v));
}

Interpreter::Interpreter(const Value& context) {
  // The globals frame is shared read-only by every render.
  static const Frame* const globals = [] {
    auto* f = new Frame();
    f->vars = GlobalFunctions();
    return f;
  }();
  root_ = NewFrame(const_cast<Frame*>(globals));
  for (const auto& kv : context.dict()) root_->Set(kv.first, kv.second);
}

Interpreter::Frame* Interpreter::NewFrame(Frame* parent) {
  frames_.emplace_back();
  frames_.back().parent = parent;
  return &frames_.back();
}

absl::StatusOr<std::string> Interpreter::Render(const Body& body) {
  std::string out;
  out_ = &out;
  flow_ = Flow::kNormal;
  RETURN_IF_ERROR(Exec(body, root_));
  out_ = nullptr;
  return out;
}

absl::StatusOr<std::string> Interpreter::Capture(const Body& body, Frame* frame) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  absl::Status st = Exec(body, frame);
  out_ = saved;
  RETURN_IF_ERROR(st);
  return buf;
}

absl::Status Interpreter::Exec(const Body& body, Frame* frame) {
  for (const StmtPtr& s : body) {
    RETURN_IF_ERROR(ExecStmt(*s, frame));
    if (flow_ != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Assign(const Stmt& s, Frame* frame,
                                 const std::vector<std::string>& targets, bool tuple,
                                 const Value& v) {
  if (!tuple) {
    frame->Set(targets[0], v);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok() || v.is_undefined()) {
    return Located(TypeError(absl::StrCat("cannot unpack non-iterable ", v.TypeName(),
                                          " object")),
                   s.line, s.column);
  }
  if (items->size() != targets.size()) {
    return Located(ValueError(items->size() < targets.size()
                                 ? absl::StrCat("not enough values to unpack (expected ",
                                                targets.size(), ", got ", items->size(), ")")
                                 : absl::StrCat("too many values to unpack (expected ",
                                                targets.size(), ")")),
                   s.line, s.column);
  }
  for (size_t i = 0; i < targets.size(); ++i) frame->Set(targets[i], (*items)[i]);
  return absl::OkStatus();
}

absl::Status Interpreter::ExecStmt(const Stmt& s, Frame* frame) {
  switch (s.kind) {
    case Stmt::Kind::kText: out_->append(s.text); return absl::OkStatus();
    case Stmt::Kind::kOutput: {
      ASSIGN_OR_RETURN(Value v, Eval(*s.expr, frame));
      if (autoescape_ && !v.is_markup()) {
        if (v.is_undefined()) return absl::OkStatus();
        out_->append(HtmlEscape(v.Str()));
      } else {
        v.AppendStr(out_);
      }
      return absl::OkStatus();
    }
    case Stmt::Kind::kAutoescape: {
      ASSIGN_OR_RETURN(Value on, Eval(*s.expr, frame));
      const bool saved = autoescape_;
      autoescape_ = on.Truthy();
      absl::Status st = Exec(s.body, frame);
      autoescape_ = saved;
      return st;
    }
    case Stmt::Kind::kNoLoader:
      return Located(TypeError("no loader for this environment specified"), s.line, s.column);
    case Stmt::Kind::kIf:
      for (const auto& [cond, body] : s.branches) {
        ASSIGN_OR_RETURN(Value c, Eval(*cond, frame));
        if (c.Truthy()) return Exec(body, frame);
      }
      return Exec(s.else_body, frame);
    case Stmt::Kind::kFor: {
      ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr, frame));
      return ExecFor(s, frame, iterable, 1);
    }
    case Stmt::Kind::kSet: {
      if (!s.attr.empty()) {
        // Jinja checks the target before evaluating the value.
        const Value* target = frame->Find(s.targets[0]);
        if (target == nullptr || !target->is_namespace()) {
          return Located(JinjaError(ErrorKind::kRuntime,
                                    "cannot assign attribute on non-namespace object"),
                         s.line, s.column);
        }
      }
      ASSIGN_OR_RETURN(Value v, Eval(*s.expr, frame));
      if (!s.attr.empty()) {
        const Value* ns = frame->Find(s.targets[0]);
        auto& items = ns->mutable_namespace();
        for (auto& kv : items) {
          if (kv.first == s.attr) {
            kv.second = std::move(v);
            return absl::OkStatus();
          }
        }
        items.emplace_back(s.attr, std::move(v));
        return absl::OkStatus();
      }
      return Assign(s, frame, s.targets, s.target_tuple, v);
    }
    case Stmt::Kind::kSetBlock: {
      Frame* inner = NewFrame(frame);
      ASSIGN_OR_RETURN(std::string text, Capture(s.body, inner));
      Value v = Value::String(std::move(text));
      if (s.expr) {
        inner->Set(kBlockInputName, v);
        ASSIGN_OR_RETURN(v, Eval(*s.expr, inner));
      }
      frame->Set(s.targets[0], std::move(v));
      return absl::OkStatus();
    }
    case Stmt::Kind::kMacro:
      frame->Set(s.name, MakeMacro(s, frame, false));
      return absl::OkStatus();
    case Stmt::Kind::kCallBlock: {
      const Expr& call = *s.expr;
      ASSIGN_OR_RETURN(Value callee, Eval(*call.a, frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(call, frame, &args));
      args.keyword.emplace_back("caller", MakeMacro(s, frame, true));
      absl::StatusOr<Value> r = Call(callee, args);
      if (!r.ok()) return Located(r.status(), s.line, s.column);
      r->AppendStr(out_);
      return absl::OkStatus();
    }
    case Stmt::Kind::kFilterBlock: {
      Frame* inner = NewFrame(frame);
      ASSIGN_OR_RETURN(std::string text, Capture(s.body, inner));
      inner->Set(kBlockInputName, Value::String(std::move(text)));
      ASSIGN_OR_RETURN(Value v, Eval(*s.expr, inner));
      v.AppendStr(out_);
      return absl::OkStatus();
    }
    case Stmt::Kind::kBreak: flow_ = Flow::kBreak; return absl::OkStatus();
    case Stmt::Kind::kContinue: flow_ = Flow::kContinue; return absl::OkStatus();
    case Stmt::Kind::kScope: return Exec(s.body, NewFrame(frame));
    case Stmt::Kind::kWith: {
      Frame* inner = NewFrame(frame);
      for (size_t i = 0; i < s.targets.size(); ++i) {
        ASSIGN_OR_RETURN(Value v, Eval(*s.values[i], frame));
        inner->Set(s.targets[i], std::move(v));
      }
      return Exec(s.body, inner);
    }
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ExecFor(const Stmt& s, Frame* frame, const Value& iterable,
                                  int depth) {
  if (iterable.is_none() || !(iterable.is_list() || iterable.is_dict() || iterable.is_string() ||
                              iterable.is_undefined())) {
    return Located(TypeError(absl::StrCat("'", iterable.TypeName(), "' object is not iterable")),
                   s.expr->line, s.expr->column);
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
  if (s.loop_filter) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      Frame* f = NewFrame(frame);
      RETURN_IF_ERROR(Assign(s, f, s.targets, s.target_tuple, item));
      ASSIGN_OR_RETURN(Value keep, Eval(*s.loop_filter, f));
      if (keep.Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  Value recurse;
  if (s.recursive) {
    recurse = Value::Callable(
        "loop", [this, &s, frame, depth](Interpreter&, CallArgs& args) -> absl::StatusOr<Value> {
          if (args.positional.size() != 1) {
            return TypeError("loop() takes exactly one argument (the iterable to recurse into)");
          }
          if (call_depth_ >= kMaxCallDepth) {
            return JinjaError(ErrorKind::kRuntime, 
                absl::StrCat("recursive loop deeper than ", kMaxCallDepth, " levels"));
          }
          std::string buf;
          std::string* saved = out_;
          out_ = &buf;
          ++call_depth_;
          absl::Status st = ExecFor(s, frame, args.positional[0], depth + 1);
          --call_depth_;
          out_ = saved;
          RETURN_IF_ERROR(st);
          return Value::String(std::move(buf));
        });
  }
  // Shared by every iteration: loop.cycle reads the current index; "no previous/next item".
  auto current = std::make_shared<int64_t>(0);
  const Value cycle = Value::Callable(
      "cycle", [current](Interpreter&, CallArgs& args) -> absl::StatusOr<Value> {
        if (args.positional.empty()) return TypeError("no items for cycling given");
        return args.positional[static_cast<size_t>(*current) % args.positional.size()];
      });
  // loop.changed(*values): true when the values differ from the previous call's.
  auto last_changed = std::make_shared<std::optional<Value>>();
  const Value changed = Value::Callable(
      "changed", [last_changed](Interpreter&, CallArgs& args) -> absl::StatusOr<Value> {
        Value v = Value::List(args.positional, /*tuple=*/true);
        if (*last_changed && Equals(**last_changed, v)) return Value::Bool(false);
        *last_changed = std::move(v);
        return Value::Bool(true);
      });
  const Value no_prev = Value::Undefined("there is no previous item");
  const Value no_next = Value::Undefined("there is no next item");
  for (int64_t i = 0; i < n; ++i) {
    *current = i;
    Frame* f = NewFrame(frame);
    RETURN_IF_ERROR(Assign(s, f, s.targets, s.target_tuple, items[i]));
    if (!s.uses_loop && !s.recursive) {
      RETURN_IF_ERROR(Exec(s.body, f));
      const bool stop = flow_ == Flow::kBreak;
      flow_ = Flow::kNormal;
      if (stop) break;
      continue;
    }
    std::vector<std::pair<std::string, Value>> loop;
    loop.reserve(14);
    loop.emplace_back("index", Value::Int(i + 1));
    loop.emplace_back("index0", Value::Int(i));
    loop.emplace_back("revindex", Value::Int(n - i));
    loop.emplace_back("revindex0", Value::Int(n - i - 1));
    loop.emplace_back("first", Value::Bool(i == 0));
    loop.emplace_back("last", Value::Bool(i == n - 1));
    loop.emplace_back("length", Value::Int(n));
    loop.emplace_back("depth", Value::Int(depth));
    loop.emplace_back("depth0", Value::Int(depth - 1));
    loop.emplace_back("previtem", i > 0 ? items[i - 1] : no_prev);
    loop.emplace_back("nextitem", i + 1 < n ? items[i + 1] : no_next);
    loop.emplace_back("cycle", cycle);
    loop.emplace_back("changed", changed);
    if (s.recursive) loop.emplace_back("\x01" "call", recurse);
    f->Set("loop", Value::Dict(std::move(loop)));
    RETURN_IF_ERROR(Exec(s.body, f));
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  if (n == 0) return Exec(s.else_body, frame);
  return absl::OkStatus();
}

Value Interpreter::MakeMacro(const Stmt& s, Frame* closure, bool is_caller) {
  const Stmt* macro = &s;
  return Value::Callable(is_caller ? "caller" : s.name,
                         [macro, closure](Interpreter& in, CallArgs& args) {
                           return in.InvokeMacro(*macro, closure, args);
                         });
}

absl::StatusOr<Value> Interpreter::InvokeMacro(const Stmt& s, Frame* closure, CallArgs& args) {
  if (call_depth_ >= kMaxCallDepth) {
    return JinjaError(ErrorKind::kRuntime, 
        absl::StrCat("macro '", s.name, "' recursed deeper than ", kMaxCallDepth, " calls"));
  }
  const std::string& name = s.kind == Stmt::Kind::kMacro ? s.name : std::string("caller");
  Frame* f = NewFrame(closure);
  std::vector<bool> given(s.params.size(), false);
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < s.params.size()) {
      f->Set(s.params[i].first, args.positional[i]);
      given[i] = true;
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  std::vector<std::pair<std::string, Value>> kwargs;
  for (auto& [k, v] : args.keyword) {
    bool matched = false;
    for (size_t i = 0; i < s.params.size(); ++i) {
      if (s.params[i].first == k) {
        if (given[i]) {
          return TypeError(absl::StrCat("macro '", name, "' got multiple values for argument '",
                                        k, "'"));
        }
        f->Set(k, v);
        given[i] = true;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (k == "caller" && s.kind == Stmt::Kind::kMacro && s.uses_caller) {
      f->Set("caller", v);
      continue;
    }
    if (!s.uses_kwargs) {
      return TypeError(absl::StrCat("macro '", name, "' takes no keyword argument '", k, "'"));
    }
    kwargs.emplace_back(k, v);
  }
  if (!varargs.empty() && !s.uses_varargs) {
    return TypeError(absl::StrCat("macro '", name, "' takes not more than ", s.params.size(),
                                  " argument(s)"));
  }
  for (size_t i = 0; i < s.params.size(); ++i) {
    if (given[i]) continue;
    if (s.params[i].second) {
      ASSIGN_OR_RETURN(Value d, Eval(*s.params[i].second, f));
      f->Set(s.params[i].first, std::move(d));
    } else {
      f->Set(s.params[i].first,
             Value::Undefined(absl::StrCat("parameter '", s.params[i].first,
                                           "' was not provided")));
    }
  }
  f->Set("varargs", Value::List(std::move(varargs), true));
  f->Set("kwargs", Value::Dict(std::move(kwargs)));
  ++call_depth_;
  const Flow saved_flow = flow_;
  flow_ = Flow::kNormal;
  absl::StatusOr<std::string> text = Capture(s.body, f);
  flow_ = saved_flow;
  --call_depth_;
  if (!text.ok()) return text.status();
  return Value::String(std::move(*text));
}

absl::Status Interpreter::EvalArgs(const Expr& e, Frame* frame, CallArgs* args) {
  args->positional.reserve(e.args.size());
  for (const ExprPtr& a : e.args) {
    ASSIGN_OR_RETURN(Value v, Eval(*a, frame));
    args->positional.push_back(std::move(v));
  }
  for (const auto& [k, a] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*a, frame));
    args->keyword.emplace_back(k, std::move(v));
  }
  if (e.dyn_args) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.dyn_args, frame));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    for (Value& x : items) args->positional.push_back(std::move(x));
  }
  if (e.dyn_kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.dyn_kwargs, frame));
    if (!v.is_dict()) {
      return TypeError(absl::StrCat("argument after ** must be a mapping, not ", v.TypeName()));
    }
    for (const auto& [k, x] : v.dict()) args->keyword.emplace_back(k, x);
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& e, Frame* frame) {
  absl::StatusOr<Value> v = EvalInner(e, frame);
  if (!v.ok()) return Located(v.status(), e.line, e.column);
  return v;
}

absl::StatusOr<Value> Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_callable()) return callee.callable_fn()(*this, args);
  if (callee.is_undefined()) return UndefinedError(callee);
  if (callee.is_dict()) {
    const Value* recurse = callee.Find("\x01" "call");
    if (recurse != nullptr) return Call(*recurse, args);
  }
  return TypeError(absl::StrCat("'", callee.TypeName(), "' object is not callable"));
}

absl::StatusOr<Value> Interpreter::GetAttr(const Value& obj, absl::string_view name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (IsUnsafeAttribute(obj, name)) return UnsafeUndefined(obj, name);
  if (obj.seq_kind() == SeqKind::kGroupTuple && (name == "grouper" || name == "list")) {
    return obj.list()[name == "grouper" ? 0 : 1];
  }
  absl::StatusOr<Value> method = BoundMethod(obj, name);
  if (method.ok()) return method;
  if (obj.is_dict() || obj.is_namespace()) {
    const Value* v = obj.Find(name);
    if (v != nullptr) return *v;
  }
  return Value::Undefined(
      absl::StrCat("'", obj.TypeRepr(), "' has no attribute '", name, "'"));
}

absl::StatusOr<Value> Interpreter::GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if ((obj.is_dict() || obj.is_namespace()) && key.is_string()) {
    const Value* v = obj.Find(key.str());
    if (v != nullptr) return *v;
  }
  if ((obj.is_subscriptable_seq() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.list().size());
      const int64_t i = NormalizeIndex(key.int_value(), n);
      if (i >= 0 && i < n) return obj.list()[static_cast<size_t>(i)];
    } else {
      std::vector<char32_t> cps = DecodeUtf8(obj.str());
      const int64_t n = static_cast<int64_t>(cps.size());
      const int64_t i = NormalizeIndex(key.int_value(), n);
      if (i >= 0 && i < n) {
        std::string s;
        AppendUtf8(cps[static_cast<size_t>(i)], &s);
        return Value::String(std::move(s));
      }
    }
  }
  if (key.is_string()) {
    if (IsUnsafeAttribute(obj, key.str())) return UnsafeUndefined(obj, key.str());
    absl::StatusOr<Value> method = BoundMethod(obj, key.str());
    if (method.ok()) return method;
    return Value::Undefined(
        absl::StrCat("'", obj.TypeRepr(), "' has no attribute '", key.str(), "'"));
  }
  std::string k;
  key.AppendRepr(&k);
  return Value::Undefined(absl::StrCat(obj.TypeRepr(), " has no element ", k));
}

absl::StatusOr<bool> CompareOp(BinOp op, const Value& a, const Value& b) {
  switch (op) {
    case BinOp::kEq: return Equals(a, b);
    case BinOp::kNe: return !Equals(a, b);
    case BinOp::kLt: {
      ASSIGN_OR_RETURN(int c, Compare(a, b, "<"));
      return c < 0;
    }
    case BinOp::kLe: {
      ASSIGN_OR_RETURN(int c, Compare(a, b, "<="));
      return c <= 0;
    }
    case BinOp::kGt: {
      ASSIGN_OR_RETURN(int c, Compare(a, b, ">"));
      return c > 0;
    }
    case BinOp::kGe: {
      ASSIGN_OR_RETURN(int c, Compare(a, b, ">="));
      return c >= 0;
    }
    case BinOp::kIn: return Contains(b, a);
    case BinOp::kNotIn: {
      ASSIGN_OR_RETURN(bool in, Contains(b, a));
      return !in;
    }
    default: return absl::InternalError("not a comparison operator");
  }
}

absl::StatusOr<Value> Interpreter::EvalBinary(const Expr& e, Frame* frame) {
  ASSIGN_OR_RETURN(Value a, Eval(*e.a, frame));
  ASSIGN_OR_RETURN(Value b, Eval(*e.b, frame));
  switch (e.op) {
    case BinOp::kConcat: {
      std::string s;
      a.AppendStr(&s);
      b.AppendStr(&s);
      return Value::String(std::move(s));
    }
    case BinOp::kEq:
    case BinOp::kNe:
    case BinOp::kLt:
    case BinOp::kLe:
    case BinOp::kGt:
    case BinOp::kGe:
    case BinOp::kIn:
    case BinOp::kNotIn: {
      ASSIGN_OR_RETURN(bool r, CompareOp(e.op, a, b));
      return Value::Bool(r);
    }
    default: return Arith(e.op, a, b);
  }
}

absl::StatusOr<Value> Interpreter::EvalInner(const Expr& e, Frame* frame) {
  switch (e.kind) {
    case Expr::Kind::kConst: return e.value;
    case Expr::Kind::kName: {
      const Value* v = frame->Find(e.name);
      if (v != nullptr) return *v;
      return Value::Undefined(absl::StrCat("'", e.name, "' is undefined"));
    }
    case Expr::Kind::kGetAttr: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, frame));
      return GetAttr(obj, e.name);
    }
    case Expr::Kind::kGetItem: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, frame));
      ASSIGN_OR_RETURN(Value key, Eval(*e.b, frame));
      return GetItem(obj, key);
    }
    case Expr::Kind::kSlice: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.a, frame));
      Value parts[3];
      const Expr* exprs[3] = {e.b.get(), e.c.get(), e.d.get()};
      for (int i = 0; i < 3; ++i) {
        if (exprs[i] != nullptr) {
          ASSIGN_OR_RETURN(parts[i], Eval(*exprs[i], frame));
        }
      }
      return SliceValue(obj, parts[0], parts[1], parts[2]);
    }
    case Expr::Kind::kCall: {
      ASSIGN_OR_RETURN(Value callee, Eval(*e.a, frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      return Call(callee, args);
    }
    case Expr::Kind::kFilter: {
      ASSIGN_OR_RETURN(Value input, Eval(*e.a, frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      if (e.filter == nullptr) {
        return JinjaError(ErrorKind::kRuntime, absl::StrCat("No filter named '", e.name,
                                                            "' found."));
      }
      return e.filter(*this, input, args);
    }
    case Expr::Kind::kTest: {
      ASSIGN_OR_RETURN(Value input, Eval(*e.a, frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      if (e.test == nullptr) {
        return JinjaError(ErrorKind::kRuntime, absl::StrCat("No test named '", e.name,
                                                            "' found."));
      }
      ASSIGN_OR_RETURN(bool r, e.test(*this, input, args));
      return Value::Bool(r != e.negated);
    }
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.a, frame));
      if (v.is_undefined()) return UndefinedError(v);
      if (!v.is_number()) {
        return TypeError(absl::StrCat("bad operand type for unary ",
                                      e.kind == Expr::Kind::kNeg ? "-" : "+", ": '",
                                      v.TypeName(), "'"));
      }
      if (e.kind == Expr::Kind::kPos) return v.is_bool() ? Value::Int(v.int_value()) : v;
      if (v.is_float()) return Value::Float(-v.float_value());
      return Value::Int(-v.int_value());
    }
    case Expr::Kind::kNot: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.a, frame));
      return Value::Bool(!v.Truthy());
    }
    case Expr::Kind::kAnd: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.a, frame));
      if (!a.Truthy()) return a;
      return Eval(*e.b, frame);
    }
    case Expr::Kind::kOr: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.a, frame));
      if (a.Truthy()) return a;
      return Eval(*e.b, frame);
    }
    case Expr::Kind::kBinary: return EvalBinary(e, frame);
    case Expr::Kind::kCompare: {
      ASSIGN_OR_RETURN(Value left, Eval(*e.args[0], frame));
      for (size_t i = 0; i < e.ops.size(); ++i) {
        ASSIGN_OR_RETURN(Value right, Eval(*e.args[i + 1], frame));
        ASSIGN_OR_RETURN(bool r, CompareOp(e.ops[i], left, right));
        if (!r) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCond: {
      ASSIGN_OR_RETURN(Value c, Eval(*e.a, frame));
      if (c.Truthy()) return Eval(*e.b, frame);
      if (e.c) return Eval(*e.c, frame);
      return Value::Undefined(absl::StrCat("the inline if-expression on line ", e.line,
                                           " evaluated to false and no else section was "
                                           "defined."));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const ExprPtr& a : e.args) {
        ASSIGN_OR_RETURN(Value v, Eval(*a, frame));
        items.push_back(std::move(v));
      }
      return Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
    }
    case Expr::Kind::kDict: {
      std::vector<std::pair<std::string, Value>> items;
      for (size_t i = 0; i < e.args.size(); ++i) {
        ASSIGN_OR_RETURN(Value k, Eval(*e.args[i], frame));
        ASSIGN_OR_RETURN(Value v, Eval(*e.args2[i], frame));
        if (!k.is_string()) {
          return JinjaError(ErrorKind::kUnsupported, 
              absl::StrCat("dict literal keys must be strings here (got ", k.TypeName(), ")"));
        }
        bool replaced = false;
        for (auto& kv : items) {
          if (kv.first == k.str()) {
            kv.second = v;
            replaced = true;
          }
        }
        if (!replaced) items.emplace_back(k.str(), std::move(v));
      }
      return Value::Dict(std::move(items));
    }
  }
  return absl::InternalError("unknown expression kind");
}

absl::StatusOr<Value> Interpreter::ApplyFilterByName(absl::string_view name, const Value& input,
                                                     CallArgs& args) {
  FilterFn f = FindFilter(name);
  if (f == nullptr) {
    return JinjaError(ErrorKind::kRuntime, absl::StrCat("No filter named '", name, "'."));
  }
  return f(*this, input, args);
}

absl::StatusOr<bool> Interpreter::ApplyTestByName(absl::string_view name, const Value& input,
                                                  CallArgs& args) {
  TestFn t = FindTest(name);
  if (t == nullptr) {
    return JinjaError(ErrorKind::kRuntime, absl::StrCat("No test named '", name, "'."));
  }
  return t(*this, input, args);
}

}  // namespace tessera::jinja
