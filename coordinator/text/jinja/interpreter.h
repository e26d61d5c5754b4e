// Executes a parsed Jinja2 template (jinja/ast.h) with Python/Jinja2 semantics as configured by
// Hugging Face for chat templates: ImmutableSandboxedEnvironment (lists and dicts cannot be
// modified; only namespace() objects can), default Undefined (prints as "", fails on attribute
// access, arithmetic and calls), the loopcontrols extension, HF's tojson (json.dumps with
// ensure_ascii=False), and the globals raise_exception(msg), strftime_now(fmt), namespace, range,
// dict. Runtime errors name the template line and column of the failing expression.
//
// Thread safety: an Interpreter holds the state of one render and is used by one thread; any
// number of Interpreters may execute the same tree concurrently.
#pragma once

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/text/jinja/ast.h"
#include "coordinator/text/jinja/value.h"

namespace tessera::jinja {

class Interpreter {
 public:
  // `context`: the render variables (a dict Value).
  explicit Interpreter(const Value& context);

  absl::StatusOr<std::string> Render(const Body& body);

  // Used by builtins.
  absl::StatusOr<Value> Call(const Value& callee, CallArgs& args);
  absl::StatusOr<Value> GetAttr(const Value& obj, absl::string_view name);
  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
  absl::StatusOr<Value> ApplyFilterByName(absl::string_view name, const Value& input,
                                          CallArgs& args);
  absl::StatusOr<bool> ApplyTestByName(absl::string_view name, const Value& input,
                                       CallArgs& args);

 private:
  struct Frame {
    Frame* parent = nullptr;
    std::vector<std::pair<std::string, Value>> vars;
    const Value* Find(absl::string_view name) const;
    void Set(absl::string_view name, Value v);
  };
  enum class Flow { kNormal, kBreak, kContinue };

  Frame* NewFrame(Frame* parent);
  absl::Status Exec(const Body& body, Frame* frame);
  absl::Status ExecStmt(const Stmt& s, Frame* frame);
  absl::Status ExecFor(const Stmt& s, Frame* frame, const Value& iterable, int depth);
  absl::StatusOr<std::string> Capture(const Body& body, Frame* frame);
  absl::StatusOr<Value> Eval(const Expr& e, Frame* frame);
  absl::StatusOr<Value> EvalInner(const Expr& e, Frame* frame);
  absl::Status EvalArgs(const Expr& e, Frame* frame, CallArgs* args);
  absl::StatusOr<Value> EvalBinary(const Expr& e, Frame* frame);
  Value MakeMacro(const Stmt& s, Frame* closure, bool is_caller);
  absl::StatusOr<Value> InvokeMacro(const Stmt& s, Frame* closure, CallArgs& args);
  absl::Status Assign(const Stmt& s, Frame* frame, const std::vector<std::string>& targets,
                      bool tuple, const Value& v);

  std::deque<Frame> frames_;
  Frame* root_ = nullptr;
  std::string* out_ = nullptr;
  Flow flow_ = Flow::kNormal;
  bool autoescape_ = false;  // inside {% autoescape true %}
  int call_depth_ = 0;
};

// Python-semantics helpers shared with the builtins.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
absl::StatusOr<int64_t> Length(const Value& v);
absl::StatusOr<int> Compare(const Value& a, const Value& b, absl::string_view op);
// a op b for an arithmetic operator (+ - * / // % **), Python semantics.
absl::StatusOr<Value> Arith(BinOp op, const Value& a, const Value& b);
// a op b for a comparison operator (== != < <= > >= in, not in).
absl::StatusOr<bool> CompareOp(BinOp op, const Value& a, const Value& b);
absl::Status UndefinedError(const Value& v);

}  // namespace tessera::jinja
