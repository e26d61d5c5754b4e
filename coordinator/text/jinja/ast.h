// Syntax tree of a parsed Jinja2 template (produced by jinja/parser.h, executed by
// jinja/interpreter.h). Nodes are immutable after parsing; a tree may be executed by several
// threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/text/jinja/value.h"

namespace tessera::jinja {

using FilterFn = absl::StatusOr<Value> (*)(Interpreter&, const Value& input, CallArgs& args);
using TestFn = absl::StatusOr<bool> (*)(Interpreter&, const Value& input, CallArgs& args);

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class BinOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat,
                   kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Expr {
  enum class Kind {
    kConst,      // value
    kName,       // name
    kGetAttr,    // a.name
    kGetItem,    // a[b]
    kSlice,      // a[b:c:d]; missing parts are null
    kCall,       // a(args, kwargs)
    kFilter,     // a | name(args, kwargs)
    kTest,       // a is [not] name(args, kwargs)
    kNeg,        // -a
    kPos,        // +a
    kNot,        // not a
    kAnd,        // a and b
    kOr,         // a or b
    kBinary,     // a op b
    kCompare,    // args[0] ops[0] args[1] ops[1] args[2] ... (chained comparison, as Python)
    kCond,       // b if a else c   (a = condition, b = true value, c = false value or null)
    kList,       // [args]
    kTuple,      // (args)
    kDict,       // {args[i]: args2[i]}
  };
  Kind kind;
  int line = 0;
  int column = 0;
  Value value;
  std::string name;
  BinOp op = BinOp::kAdd;
  std::vector<BinOp> ops;  // kCompare
  bool negated = false;  // kTest: "is not"
  ExprPtr a, b, c, d;
  std::vector<ExprPtr> args;
  std::vector<ExprPtr> args2;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args;    // call(*dyn_args)
  ExprPtr dyn_kwargs;  // call(**dyn_kwargs)
  // Resolved at parse time; null for an unknown name, which fails when evaluated ("No filter
  // named 'x' found.") -- Jinja defers that error to runtime inside if / conditional expressions
  // and rejects the template at parse time elsewhere.
  FilterFn filter = nullptr;
  TestFn test = nullptr;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // branches (cond, body); else_body
    kFor,          // for targets in expr [if filter] [recursive]: body else else_body
    kSet,          // set targets = expr   /  set name.attr = expr (attr non-empty)
    kSetBlock,     // set name [| filters] %}body{% endset  (expr applies the filters)
    kMacro,        // macro name(params) body
    kCallBlock,    // call[(params)] expr %}body{% endcall
    kFilterBlock,  // filter chain(expr) %}body{% endfilter
    kBreak,
    kContinue,
    kScope,        // body in its own scope (with, HF's generation block)
    kWith,         // with targets = exprs: body
    kAutoescape,   // autoescape expr: body (outputs are HTML-escaped when expr is true)
    kNoLoader,     // include / import / from / extends: fails (HF's environment has no loader)
  };
  Kind kind;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr loop_filter;
  bool recursive = false;
  bool uses_loop = true;  // kFor: the body (or its filter) mentions the name "loop"
  // kMacro / kCallBlock: the body mentions varargs / kwargs / caller (Jinja accepts extra
  // positional / keyword arguments / a caller only then).
  bool uses_varargs = false;
  bool uses_kwargs = false;
  bool uses_caller = false;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> targets;
  bool target_tuple = false;
  std::string attr;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro / caller params (default or null)
  std::vector<ExprPtr> values;                          // kWith values
};

// The name a filter block / block set binds the rendered body to before applying its filters.
inline constexpr char kBlockInputName[] = "\x01" "block";

}  // namespace tessera::jinja
