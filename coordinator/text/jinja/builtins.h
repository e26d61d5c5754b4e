// Jinja2 builtins for the chat-template interpreter: global functions (namespace, range, dict,
// raise_exception, strftime_now), filters, tests, and the Python methods templates call on
// str / dict / list values. See docs/chat-templates.md for the supported list.
// Thread safety: stateless.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/text/jinja/value.h"

namespace tessera::jinja {

// The globals every render sees (below the render variables).
const std::vector<std::pair<std::string, Value>>& GlobalFunctions();

// obj.name as a bound method: a callable, an Undefined that raises SecurityError when called
// (methods that would modify a list or dict, refused like ImmutableSandboxedEnvironment), or
// NotFound when `obj` has no such method.
absl::StatusOr<Value> BoundMethod(const Value& obj, absl::string_view name);

// Python's printf-style `fmt % args` (args: a tuple, a dict for %(name)s fields, or one value).
// Conversions s r a d i u f F e E g G x X o c and %%, with flags, width and precision.
absl::StatusOr<Value> PercentFormat(const std::string& fmt, const Value& args);

// The message raise_exception() failures carry is prefixed with this marker so callers can
// tell a template's own rejection from other errors.
inline constexpr char kRaiseExceptionPrefix[] = "raise_exception: ";

}  // namespace tessera::jinja
