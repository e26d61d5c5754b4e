#include "coordinator/text/jinja/errors.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace tessera::jinja {
namespace {

constexpr char kKindPayload[] = "tessera.dev/jinja-error-kind";

absl::StatusCode CodeOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kSecurity: return absl::StatusCode::kPermissionDenied;
    case ErrorKind::kRaised: return absl::StatusCode::kFailedPrecondition;
    case ErrorKind::kRuntime: return absl::StatusCode::kResourceExhausted;
    case ErrorKind::kUnsupported: return absl::StatusCode::kUnimplemented;
    default: return absl::StatusCode::kInvalidArgument;
  }
}

}  // namespace

absl::Status JinjaError(ErrorKind kind, absl::string_view message) {
  absl::Status s(CodeOf(kind), message);
  s.SetPayload(kKindPayload, absl::Cord(ErrorKindName(kind)));
  return s;
}

ErrorKind ErrorKindOf(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kKindPayload);
  if (!p) return ErrorKind::kNone;
  const std::string name(*p);
  for (ErrorKind k : {ErrorKind::kSyntax, ErrorKind::kUndefined, ErrorKind::kType,
                      ErrorKind::kValue, ErrorKind::kSecurity, ErrorKind::kRaised,
                      ErrorKind::kRuntime, ErrorKind::kUnsupported}) {
    if (name == ErrorKindName(k)) return k;
  }
  return ErrorKind::kNone;
}

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone: return "";
    case ErrorKind::kSyntax: return "syntax";
    case ErrorKind::kUndefined: return "undefined";
    case ErrorKind::kType: return "type";
    case ErrorKind::kValue: return "value";
    case ErrorKind::kSecurity: return "security";
    case ErrorKind::kRaised: return "raised";
    case ErrorKind::kRuntime: return "runtime";
    case ErrorKind::kUnsupported: return "unsupported";
  }
  return "";
}

absl::Status WithMessagePrefix(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

}  // namespace tessera::jinja
