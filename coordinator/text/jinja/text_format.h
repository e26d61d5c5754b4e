// Python text algorithms the Jinja builtins need, reproduced exactly: str.format's format-spec
// mini-language, textwrap.wrap (for |wordwrap), urllib.parse.quote (for |urlencode),
// MarkupSafe's escape / striptags, pprint.pformat (for |pprint), and Unicode-aware case
// mapping (str.upper / lower / capitalize / title, with ICU when built with it).
// Thread safety: stateless.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/text/jinja/value.h"

namespace tessera::jinja {

// format(value, spec): [[fill]align][sign][#][0][width][,|_][.precision][type].
absl::StatusOr<std::string> FormatWithSpec(const Value& v, absl::string_view spec);

// textwrap.wrap(text, width, expand_tabs=False, replace_whitespace=False, break_long_words,
// break_on_hyphens) -- the lines, without separators.
std::vector<std::string> TextWrap(const std::string& text, int64_t width, bool break_long_words,
                                  bool break_on_hyphens);

// urllib.parse.quote(s.encode("utf-8"), safe): unreserved characters and `safe` kept.
std::string UrlQuote(absl::string_view s, absl::string_view safe);

// markupsafe.escape(s) (without the Markup wrapper).
std::string HtmlEscape(absl::string_view s);
// markupsafe.Markup(s).striptags(): comments and tags removed, whitespace collapsed, entities
// unescaped.
std::string StripTags(absl::string_view s);

// pprint.pformat(value) for values that fit on one 80-column line (dict keys sorted).
std::string PrettyRepr(const Value& v);

// Python str methods with full Unicode case mapping.
std::string PyLower(const std::string& s);
std::string PyUpper(const std::string& s);
std::string PyCapitalize(const std::string& s);  // first char title-cased, the rest lower
std::string PyTitle(const std::string& s);       // str.title(): cased runs
// Jinja's |title: each word (split at whitespace and -({[<) upper-cased first char, rest lower.
std::string JinjaTitle(const std::string& s);
bool PyIsLower(const std::string& s);
bool PyIsUpper(const std::string& s);

}  // namespace tessera::jinja
