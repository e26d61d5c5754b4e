// Lexer and parser of Jinja2 template source into a syntax tree (jinja/ast.h).
//
// Whitespace handling replicates Jinja2 3.1's lexer with the options Hugging Face uses for chat
// templates: trim_blocks (the first newline after a block or comment tag is removed),
// lstrip_blocks (spaces and tabs before a block or comment tag at the start of a line are
// removed), keep_trailing_newline=False (one trailing newline of the source is dropped), "-" and
// "+" whitespace modifiers on every tag, and newline normalisation to "\n". Unknown tags,
// filters and tests are errors at parse time (as in Jinja2), naming line and column.
// Thread safety: stateless.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/text/jinja/ast.h"

namespace tessera::jinja {

struct ParseOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

absl::StatusOr<Body> ParseTemplate(absl::string_view source, const ParseOptions& options);

// Resolved by the interpreter (jinja/interpreter.cc): nullptr when there is no such filter/test.
FilterFn FindFilter(absl::string_view name);
TestFn FindTest(absl::string_view name);

}  // namespace tessera::jinja
