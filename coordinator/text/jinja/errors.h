// Error kinds of the Jinja interpreter, mirroring the Python exceptions jinja2 raises, so callers
// (and the conformance tests) can tell a template's own raise_exception() from an undefined
// variable, a type error or a sandbox violation without parsing messages.
//
// The kind rides on the absl::Status as a payload; the status code is chosen to match:
// kSyntax / kUndefined / kType / kValue -> InvalidArgument, kSecurity -> PermissionDenied,
// kRaised -> FailedPrecondition, kLimit -> ResourceExhausted, kUnsupported -> Unimplemented.
// Thread safety: stateless.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tessera::jinja {

enum class ErrorKind {
  kNone,         // not a Jinja error (OK, or a status from elsewhere)
  kSyntax,       // TemplateSyntaxError / TemplateAssertionError (at parse time)
  kUndefined,    // UndefinedError: an undefined value was used
  kType,         // TypeError, AttributeError: wrong operand types, not callable, ...
  kValue,        // ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError
  kSecurity,     // SecurityError: the immutable sandbox refused (list.append, ...)
  kRaised,       // the template called raise_exception(msg)
  kRuntime,      // TemplateRuntimeError (e.g. the sandbox's range limit, recursion depth)
  kUnsupported,  // a Jinja feature this interpreter does not implement
};

absl::Status JinjaError(ErrorKind kind, absl::string_view message);
inline absl::Status TypeError(absl::string_view message) {
  return JinjaError(ErrorKind::kType, message);
}
inline absl::Status ValueError(absl::string_view message) {
  return JinjaError(ErrorKind::kValue, message);
}

// kNone for statuses without a Jinja kind.
ErrorKind ErrorKindOf(const absl::Status& status);
// "syntax", "undefined", "type", "value", "security", "raised", "runtime", "unsupported", "".
const char* ErrorKindName(ErrorKind kind);

// `status` with `prefix` prepended to its message; code and payloads kept.
absl::Status WithMessagePrefix(const absl::Status& status, absl::string_view prefix);

}  // namespace tessera::jinja
