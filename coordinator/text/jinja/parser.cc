#include "coordinator/text/jinja/parser.h"

#include <cctype>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#ifdef TESSERA_HAVE_ICU
#include <unicode/uchar.h>
#endif

#include "absl/strings/str_cat.h"
#include "coordinator/text/jinja/errors.h"
#include "kernels/base/status.h"

namespace tessera::jinja {
namespace {

enum class Tok { kText, kBlockBegin, kBlockEnd, kVarBegin, kVarEnd, kName, kString, kInt,
                 kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string text;  // text data, name, operator, decoded string
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

absl::Status ErrorAt(int line, int column, absl::string_view message) {
  return JinjaError(ErrorKind::kSyntax,
      absl::StrCat("template line ", line, ", column ", column, ": ", message));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
                              c == '\v'; }

// Python str.rstrip() on the text before a "-" tag.
void RStripAll(std::string* s) {
  while (!s->empty() && IsSpace(s->back())) s->pop_back();
}

class Lexer {
 public:
  Lexer(std::string source, const ParseOptions& options)
      : src_(std::move(source)), options_(options) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t tag = FindTag(pos);
      std::string text = src_.substr(pos, (tag == std::string::npos ? n : tag) - pos);
      if (tag == std::string::npos) {
        EmitText(std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];
      const char modifier = tag + 2 < n ? src_[tag + 2] : '\0';
      if (modifier == '-') {
        RStripAll(&text);
      } else if (modifier != '+' && options_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = (l_pos == std::string::npos) ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool all_ws = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) {
            if (!IsSpace(text[i])) {
              all_ws = false;
              break;
            }
          }
          if (all_ws) text.resize(l_pos);
        }
      }
      EmitText(std::move(text), pos);
      size_t p = tag + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", p);
        if (end == std::string::npos) {
          Position(tag, &line_, &col_);
          return ErrorAt(line_, col_, "missing end of comment tag '#}'");
        }
        size_t after = end + 2;
        const char before = end > p ? src_[end - 1] : '\0';
        if (before == '-') {
          while (after < n && IsSpace(src_[after])) ++after;
        } else if (before != '+' && options_.trim_blocks && after < n && src_[after] == '\n') {
          ++after;
        }
        line_starting = after > 0 && src_[after - 1] == '\n';
        pos = after;
        continue;
      }
      const bool is_block = kind == '%';
      tokens_.push_back(MakeToken(is_block ? Tok::kBlockBegin : Tok::kVarBegin, "", tag));
      const size_t first_token = tokens_.size();
      int depth = 0;
      bool closed = false;
      while (p < n) {
        while (p < n && IsSpace(src_[p])) ++p;
        if (p >= n) break;
        // End of tag?
        const char* end_str = is_block ? "%}" : "}}";
        size_t end_at = std::string::npos;
        char end_mod = '\0';
        if ((src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 2, end_str) == 0 &&
            (is_block || src_[p] == '-')) {
          end_at = p + 1;
          end_mod = src_[p];
        } else if (src_.compare(p, 2, end_str) == 0 && (is_block || depth == 0)) {
          end_at = p;
        }
        if (end_at != std::string::npos && (is_block || depth == 0)) {
          size_t after = end_at + 2;
          if (end_mod == '-') {
            while (after < n && IsSpace(src_[after])) ++after;
          } else if (is_block && end_mod != '+' && options_.trim_blocks && after < n &&
                     src_[after] == '\n') {
            ++after;
          }
          tokens_.push_back(MakeToken(is_block ? Tok::kBlockEnd : Tok::kVarEnd, "", p));
          line_starting = after > 0 && src_[after - 1] == '\n';
          // {% raw %}: everything up to {% endraw %} is text.
          // Jinja's raw_begin accepts "-%}" but not "+%}" ("{% raw +%}" is an unknown tag).
          if (is_block && end_mod != '+' && tokens_.size() == first_token + 2 &&
              tokens_[first_token].type == Tok::kName && tokens_[first_token].text == "raw") {
            tokens_.resize(first_token - 1);
            // Jinja's raw_begin has no trim_blocks suffix: undo the newline trim.
            if (end_mod != '-' && after > end_at + 2) after = end_at + 2;
            absl::StatusOr<size_t> next = LexRaw(after, tag, &line_starting);
            if (!next.ok()) return next.status();
            pos = *next;
          } else {
            pos = after;
          }
          closed = true;
          break;
        }
        RETURN_IF_ERROR(LexExprToken(&p, &depth));
      }
      if (!closed) {
        Position(tag, &line_, &col_);
        return ErrorAt(line_, col_, is_block ? "unexpected end of template, expected '%}'"
                                             : "unexpected end of template, expected '}}'");
      }
    }
    tokens_.push_back(MakeToken(Tok::kEof, "", n));
    return std::move(tokens_);
  }

 private:
  size_t FindTag(size_t from) const {
    size_t p = from;
    while (true) {
      p = src_.find('{', p);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      ++p;
    }
  }

  void Position(size_t offset, int* line, int* col) {
    // Incremental: offsets are requested mostly in increasing order.
    if (offset < pos_cache_) {
      pos_cache_ = 0;
      line_cache_ = 1;
      col_cache_ = 1;
    }
    for (; pos_cache_ < offset && pos_cache_ < src_.size(); ++pos_cache_) {
      if (src_[pos_cache_] == '\n') {
        ++line_cache_;
        col_cache_ = 1;
      } else {
        ++col_cache_;
      }
    }
    *line = line_cache_;
    *col = col_cache_;
  }

  Token MakeToken(Tok type, std::string text, size_t offset) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    Position(offset, &t.line, &t.column);
    return t;
  }

  void EmitText(std::string text, size_t offset) {
    if (text.empty()) return;
    tokens_.push_back(MakeToken(Tok::kText, std::move(text), offset));
  }

  absl::StatusOr<size_t> LexRaw(size_t pos, size_t tag, bool* line_starting) {
    const size_t n = src_.size();
    size_t search = pos;
    while (true) {
      size_t t = src_.find("{%", search);
      if (t == std::string::npos) {
        Position(tag, &line_, &col_);
        return ErrorAt(line_, col_, "missing {% endraw %} for this {% raw %}");
      }
      size_t p = t + 2;
      char mod = '\0';
      if (p < n && (src_[p] == '-' || src_[p] == '+')) mod = src_[p++];
      while (p < n && IsSpace(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = t + 2;
        continue;
      }
      p += 6;
      while (p < n && IsSpace(src_[p])) ++p;
      char end_mod = '\0';
      if (p < n && (src_[p] == '-' || src_[p] == '+')) end_mod = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) {
        search = t + 2;
        continue;
      }
      std::string text = src_.substr(pos, t - pos);
      if (mod == '-') {
        RStripAll(&text);
      } else if (mod != '+' && options_.lstrip_blocks) {
        size_t l_pos = text.rfind('\n');
        l_pos = (l_pos == std::string::npos) ? 0 : l_pos + 1;
        if (l_pos > 0 || *line_starting) {
          bool all_ws = l_pos < text.size();
          for (size_t i = l_pos; i < text.size(); ++i) all_ws = all_ws && IsSpace(text[i]);
          if (all_ws) text.resize(l_pos);
        }
      }
      EmitText(std::move(text), pos);
      size_t after = p + 2;
      if (end_mod == '-') {
        while (after < n && IsSpace(src_[after])) ++after;
      } else if (end_mod != '+' && options_.trim_blocks && after < n && src_[after] == '\n') {
        ++after;
      }
      *line_starting = after > 0 && src_[after - 1] == '\n';
      return after;
    }
  }

  absl::Status LexExprToken(size_t* pp, int* depth) {
    size_t p = *pp;
    const size_t n = src_.size();
    const char c = src_[p];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < n && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      tokens_.push_back(MakeToken(Tok::kName, src_.substr(p, e - p), p));
      *pp = e;
      return absl::OkStatus();
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      const bool after_dot = !tokens_.empty() && tokens_.back().type == Tok::kOp &&
                             tokens_.back().text == ".";
      size_t e = p;
      // 0x / 0o / 0b integers (underscores allowed between digits), as Jinja's integer_re.
      if (c == '0' && p + 2 < n && std::strchr("xXoObB", src_[p + 1]) != nullptr) {
        const char base_ch = static_cast<char>(std::tolower(src_[p + 1]));
        const int base = base_ch == 'x' ? 16 : base_ch == 'o' ? 8 : 2;
        auto is_digit = [&](char d) {
          return base == 16 ? std::isxdigit(static_cast<unsigned char>(d)) != 0
                            : (d >= '0' && d < static_cast<char>('0' + base));
        };
        size_t q = p + 2;
        std::string digits_text;
        while (q < n) {
          if (src_[q] == '_' && q + 1 < n && is_digit(src_[q + 1])) ++q;
          if (!is_digit(src_[q])) break;
          digits_text.push_back(src_[q++]);
        }
        if (!digits_text.empty()) {
          Token t = MakeToken(Tok::kInt, src_.substr(p, q - p), p);
          t.int_value = static_cast<int64_t>(std::strtoull(digits_text.c_str(), nullptr, base));
          tokens_.push_back(std::move(t));
          *pp = q;
          return absl::OkStatus();
        }
      }
      auto digits = [&]() {
        while (e < n && (std::isdigit(static_cast<unsigned char>(src_[e])) ||
                         (src_[e] == '_' && e + 1 < n &&
                          std::isdigit(static_cast<unsigned char>(src_[e + 1]))))) {
          ++e;
        }
      };
      digits();
      bool is_float = false;
      if (!after_dot && e + 1 < n && src_[e] == '.' &&
          std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        is_float = true;
        ++e;
        digits();
      }
      if (!after_dot && e < n && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t save = e;
        ++e;
        if (e < n && (src_[e] == '+' || src_[e] == '-')) ++e;
        if (e < n && std::isdigit(static_cast<unsigned char>(src_[e]))) {
          digits();
          is_float = true;
        } else {
          e = save;
        }
      }
      // An integer starting with 0 is only zeros ("01" lexes as 0 then 1, a syntax error).
      if (!is_float && c == '0') {
        e = p + 1;
        while (e < n && (src_[e] == '0' || (src_[e] == '_' && e + 1 < n && src_[e + 1] == '0'))) {
          ++e;
        }
      }
      std::string text;
      for (size_t i = p; i < e; ++i) {
        if (src_[i] != '_') text.push_back(src_[i]);
      }
      Token t = MakeToken(is_float ? Tok::kFloat : Tok::kInt, text, p);
      if (is_float) {
        t.float_value = std::strtod(text.c_str(), nullptr);
      } else {
        t.int_value = std::strtoll(text.c_str(), nullptr, 10);
      }
      tokens_.push_back(std::move(t));
      *pp = e;
      return absl::OkStatus();
    }
    if (c == '\'' || c == '"') {
      std::string out;
      size_t i = p + 1;
      while (true) {
        if (i >= n) {
          Position(p, &line_, &col_);
          return ErrorAt(line_, col_, "unterminated string literal");
        }
        const char ch = src_[i];
        if (ch == c) break;
        if (ch != '\\') {
          out.push_back(ch);
          ++i;
          continue;
        }
        if (i + 1 >= n) {
          ++i;
          continue;
        }
        const char e = src_[i + 1];
        i += 2;
        switch (e) {
          case '\n': break;
          case '\\': out.push_back('\\'); break;
          case '\'': out.push_back('\''); break;
          case '"': out.push_back('"'); break;
          case 'a': out.push_back('\a'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'v': out.push_back('\v'); break;
          case 'N': {
            // \N{UNICODE NAME}
            const size_t close = src_.find('}', i);
            bool ok = i < n && src_[i] == '{' && close != std::string::npos;
#ifdef TESSERA_HAVE_ICU
            if (ok) {
              UErrorCode err = U_ZERO_ERROR;
              const std::string name = src_.substr(i + 1, close - i - 1);
              const UChar32 cp = u_charFromName(U_UNICODE_CHAR_NAME, name.c_str(), &err);
              ok = U_SUCCESS(err) && cp >= 0;
              if (ok) AppendUtf8(static_cast<char32_t>(cp), &out);
            }
#else
            ok = false;
#endif
            if (!ok) {
              Position(p, &line_, &col_);
              return ErrorAt(line_, col_, "malformed or unknown \\N{...} escape in string literal");
            }
            i = close + 1;
            break;
          }
          case 'x':
          case 'u':
          case 'U': {
            const size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (i + len > n) {
              Position(p, &line_, &col_);
              return ErrorAt(line_, col_, "truncated \\x/\\u escape in string literal");
            }
            char32_t cp = 0;
            for (size_t k = 0; k < len; ++k) {
              const char h = src_[i + k];
              if (!std::isxdigit(static_cast<unsigned char>(h))) {
                Position(p, &line_, &col_);
                return ErrorAt(line_, col_, "invalid \\x/\\u escape in string literal");
              }
              cp = cp * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                       ? h - '0'
                                                       : std::tolower(h) - 'a' + 10);
            }
            AppendUtf8(cp, &out);
            i += len;
            break;
          }
          default:
            if (e >= '0' && e <= '7') {
              char32_t cp = static_cast<char32_t>(e - '0');
              for (int k = 0; k < 2 && i < n && src_[i] >= '0' && src_[i] <= '7'; ++k, ++i) {
                cp = cp * 8 + static_cast<char32_t>(src_[i] - '0');
              }
              AppendUtf8(cp, &out);
            } else {
              out.push_back('\\');
              out.push_back(e);
            }
        }
      }
      tokens_.push_back(MakeToken(Tok::kString, std::move(out), p));
      *pp = i + 1;
      return absl::OkStatus();
    }
    static const char* const kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : kOps2) {
      if (src_.compare(p, 2, op) == 0) {
        tokens_.push_back(MakeToken(Tok::kOp, op, p));
        *pp = p + 2;
        return absl::OkStatus();
      }
    }
    static const std::string kOps1 = "+-*/%~<>=()[]{},.:|";
    if (kOps1.find(c) != std::string::npos) {
      if (c == '(' || c == '[' || c == '{') ++*depth;
      if (c == ')' || c == ']' || c == '}') --*depth;
      tokens_.push_back(MakeToken(Tok::kOp, std::string(1, c), p));
      *pp = p + 1;
      return absl::OkStatus();
    }
    Position(p, &line_, &col_);
    return ErrorAt(line_, col_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  std::string src_;
  ParseOptions options_;
  std::vector<Token> tokens_;
  size_t pos_cache_ = 0;
  int line_cache_ = 1;
  int col_cache_ = 1;
  int line_ = 1;
  int col_ = 1;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<Body> ParseAll() {
    Body body;
    std::string end;
    RETURN_IF_ERROR(ParseBody({}, &body, &end));
    return body;
  }

 private:
  const Token& Peek(size_t k = 0) const {
    return t_[std::min(i_ + k, t_.size() - 1)];
  }
  const Token& Next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool IsOp(absl::string_view op, size_t k = 0) const {
    return Peek(k).type == Tok::kOp && Peek(k).text == op;
  }
  bool IsName(absl::string_view name, size_t k = 0) const {
    return Peek(k).type == Tok::kName && Peek(k).text == name;
  }
  absl::Status Error(const Token& t, absl::string_view msg) {
    return ErrorAt(t.line, t.column, msg);
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Tok::kName: return absl::StrCat("'", t.text, "'");
      case Tok::kOp: return absl::StrCat("'", t.text, "'");
      case Tok::kString: return "string literal";
      case Tok::kInt:
      case Tok::kFloat: return "number";
      case Tok::kBlockEnd: return "end of statement block '%}'";
      case Tok::kVarEnd: return "end of print statement '}}'";
      case Tok::kEof: return "end of template";
      default: return "text";
    }
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) {
      return Error(Peek(), absl::StrCat("expected '", op, "', got ", Describe(Peek())));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Tok::kBlockEnd) {
      return Error(Peek(), absl::StrCat("expected end of statement block '%}', got ",
                                        Describe(Peek())));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != Tok::kName) {
      return Error(Peek(), absl::StrCat("expected a name, got ", Describe(Peek())));
    }
    return Next().text;
  }

  ExprPtr NewExpr(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  StmtPtr NewStmt(Stmt::Kind kind, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = at.line;
    s->column = at.column;
    return s;
  }

  // Parses statements until a block tag whose name is in `ends` (consumed; the rest of that tag
  // is left to the caller). `end` receives the tag name; empty at end of template (only allowed
  // when `ends` is empty).
  absl::Status ParseBody(const std::vector<absl::string_view>& ends, Body* body,
                         std::string* end) {
    while (true) {
      const Token& tok = Peek();
      switch (tok.type) {
        case Tok::kEof:
          if (!ends.empty()) {
            return Error(tok, absl::StrCat("unexpected end of template; expected '",
                                           ends.back(), "'"));
          }
          end->clear();
          return absl::OkStatus();
        case Tok::kText: {
          auto s = NewStmt(Stmt::Kind::kText, tok);
          s->text = tok.text;
          ++i_;
          body->push_back(std::move(s));
          break;
        }
        case Tok::kVarBegin: {
          auto s = NewStmt(Stmt::Kind::kOutput, tok);
          ++i_;
          ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(/*allow_cond=*/true));
          if (Peek().type != Tok::kVarEnd) {
            return Error(Peek(), absl::StrCat("expected end of print statement '}}', got ",
                                              Describe(Peek())));
          }
          ++i_;
          body->push_back(std::move(s));
          break;
        }
        case Tok::kBlockBegin: {
          const Token& begin = tok;
          ++i_;
          if (Peek().type != Tok::kName) {
            return Error(Peek(), "expected a statement name after '{%'");
          }
          const Token& name_tok = Peek();
          for (absl::string_view e : ends) {
            if (name_tok.text == e) {
              ++i_;
              *end = name_tok.text;
              return absl::OkStatus();
            }
          }
          ASSIGN_OR_RETURN(StmtPtr s, ParseStatement(begin));
          if (s) body->push_back(std::move(s));
          break;
        }
        default:
          return Error(tok, absl::StrCat("unexpected ", Describe(tok)));
      }
    }
  }

  absl::StatusOr<StmtPtr> ParseStatement(const Token& begin) {
    const Token name_tok = Next();
    const std::string& name = name_tok.text;
    if (name == "if") return ParseIf(name_tok);
    if (name == "for") return ParseFor(name_tok);
    if (name == "set") return ParseSet(name_tok);
    if (name == "macro") return ParseMacro(name_tok);
    if (name == "call") return ParseCallBlock(name_tok);
    if (name == "filter") return ParseFilterBlock(name_tok);
    if (name == "with") return ParseWith(name_tok);
    if (name == "block") {
      // A standalone template renders its blocks in place.
      auto s = NewStmt(Stmt::Kind::kScope, name_tok);
      RETURN_IF_ERROR(ExpectName().status());
      if (IsName("scoped")) ++i_;
      if (IsName("required")) ++i_;
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      const int saved = loop_depth_;
      loop_depth_ = 0;
      absl::Status st = ParseBody({"endblock"}, &s->body, &end);
      loop_depth_ = saved;
      RETURN_IF_ERROR(st);
      if (Peek().type == Tok::kName) ++i_;  // {% endblock name %}
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (name == "autoescape") {
      auto s = NewStmt(Stmt::Kind::kAutoescape, name_tok);
      ASSIGN_OR_RETURN(s->expr, ParseExpr(true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endautoescape"}, &s->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (name == "include" || name == "import" || name == "from" || name == "extends") {
      // Parsed (template name and modifiers skipped); rendering fails like Jinja without a
      // loader, which is how Hugging Face's environment is set up.
      auto s = NewStmt(Stmt::Kind::kNoLoader, name_tok);
      while (Peek().type != Tok::kBlockEnd && Peek().type != Tok::kEof) ++i_;
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (name == "generation") {
      // Hugging Face's AssistantTracker extension: renders its body unchanged.
      auto s = NewStmt(Stmt::Kind::kScope, name_tok);
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endgeneration"}, &s->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) {
        return Error(name_tok, absl::StrCat("'", name, "' outside of a for loop"));
      }
      auto s = NewStmt(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, name_tok);
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    static const char* const kEndTags[] = {"endif", "endfor", "else", "elif", "endset",
                                           "endmacro", "endcall", "endfilter", "endwith",
                                           "endgeneration", "endraw", "endblock",
                                           "endautoescape"};
    for (const char* e : kEndTags) {
      if (name == e) return Error(name_tok, absl::StrCat("unexpected '", name, "' tag"));
    }
    (void)begin;
    return Error(name_tok,
                 absl::StrCat("unknown or unsupported tag '", name,
                              "' (supported: if, for, set, macro, call, filter, with, raw, "
                              "break, continue, block, autoescape, generation)"));
  }

  absl::StatusOr<StmtPtr> ParseIf(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kIf, at);
    while (true) {
      ASSIGN_OR_RETURN(ExprPtr cond, ParseExpr(true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      Body body;
      std::string end;
      RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &body, &end));
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody({"endif"}, &s->else_body, &end));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
  }

  absl::Status ParseTargets(Stmt* s, bool allow_attr) {
    ASSIGN_OR_RETURN(std::string first, ExpectName());
    if (allow_attr && IsOp(".")) {
      ++i_;
      ASSIGN_OR_RETURN(s->attr, ExpectName());
      s->targets.push_back(first);
      return absl::OkStatus();
    }
    s->targets.push_back(first);
    while (IsOp(",")) {
      ++i_;
      s->target_tuple = true;
      // "for a, in x" ends the tuple; "set a, = x" does not (Jinja's parse_tuple).
      if (!allow_attr && IsName("in")) break;
      if (Peek().type != Tok::kName) {
        return Error(Peek(), absl::StrCat("unexpected ", Describe(Peek())));
      }
      ASSIGN_OR_RETURN(std::string n, ExpectName());
      s->targets.push_back(n);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StmtPtr> ParseFor(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kFor, at);
    bool paren = false;
    if (IsOp("(")) {
      paren = true;
      ++i_;
    }
    RETURN_IF_ERROR(ParseTargets(s.get(), false));
    if (paren) RETURN_IF_ERROR(ExpectOp(")"));
    if (!IsName("in")) return Error(Peek(), absl::StrCat("expected 'in', got ", Describe(Peek())));
    ++i_;
    ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(/*allow_cond=*/false));
    if (IsName("if")) {
      ++i_;
      ASSIGN_OR_RETURN(s->loop_filter, ParseExpr(true));
    }
    if (IsName("recursive")) {
      ++i_;
      s->recursive = true;
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    ++loop_depth_;
    const size_t body_begin = i_;
    absl::Status st = ParseBody({"else", "endfor"}, &s->body, &end);
    --loop_depth_;
    RETURN_IF_ERROR(st);
    // The loop object is only built when the body can see it (name "loop" anywhere inside).
    s->uses_loop = false;
    for (size_t k = body_begin; k < i_; ++k) {
      if (t_[k].type == Tok::kName && t_[k].text == "loop") s->uses_loop = true;
    }
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      RETURN_IF_ERROR(ParseBody({"endfor"}, &s->else_body, &end));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseSet(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kSet, at);
    RETURN_IF_ERROR(ParseTargets(s.get(), true));
    if (IsOp("=")) {
      ++i_;
      ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    // Block set: {% set name [| filters] %}...{% endset %}
    if (s->target_tuple || !s->attr.empty()) {
      return Error(Peek(), "a block set takes a single name");
    }
    s->kind = Stmt::Kind::kSetBlock;
    if (IsOp("|")) {
      auto input = NewExpr(Expr::Kind::kName, Peek());
      input->name = kBlockInputName;
      ASSIGN_OR_RETURN(s->expr, ParseFilters(std::move(input)));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody({"endset"}, &s->body, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::Status ParseParams(Stmt* s) {
    RETURN_IF_ERROR(ExpectOp("("));
    bool seen_default = false;
    while (!IsOp(")")) {
      if (!s->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      const Token& at = Peek();
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      ExprPtr def;
      if (IsOp("=")) {
        ++i_;
        ASSIGN_OR_RETURN(def, ParseExpr(true));
        seen_default = true;
      } else if (seen_default) {
        return Error(at, "non-default argument follows default argument");
      }
      s->params.emplace_back(std::move(name), std::move(def));
    }
    return ExpectOp(")");
  }

  void ScanMacroNames(Stmt* s, size_t begin) {
    for (size_t k = begin; k < i_; ++k) {
      if (t_[k].type != Tok::kName) continue;
      if (t_[k].text == "varargs") s->uses_varargs = true;
      if (t_[k].text == "kwargs") s->uses_kwargs = true;
      if (t_[k].text == "caller") s->uses_caller = true;
    }
  }

  absl::StatusOr<StmtPtr> ParseMacro(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kMacro, at);
    ASSIGN_OR_RETURN(s->name, ExpectName());
    RETURN_IF_ERROR(ParseParams(s.get()));
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved = loop_depth_;
    loop_depth_ = 0;
    const size_t body_begin = i_;
    absl::Status st = ParseBody({"endmacro"}, &s->body, &end);
    loop_depth_ = saved;
    RETURN_IF_ERROR(st);
    ScanMacroNames(s.get(), body_begin);
    if (Peek().type == Tok::kName) ++i_;  // {% endmacro name %}
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseCallBlock(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kCallBlock, at);
    if (IsOp("(")) RETURN_IF_ERROR(ParseParams(s.get()));
    ASSIGN_OR_RETURN(s->expr, ParseExpr(true));
    if (s->expr->kind != Expr::Kind::kCall) {
      return Error(at, "expected a call expression after 'call'");
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved = loop_depth_;
    loop_depth_ = 0;
    const size_t body_begin = i_;
    absl::Status st = ParseBody({"endcall"}, &s->body, &end);
    loop_depth_ = saved;
    RETURN_IF_ERROR(st);
    ScanMacroNames(s.get(), body_begin);
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseFilterBlock(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kFilterBlock, at);
    auto input = NewExpr(Expr::Kind::kName, at);
    input->name = kBlockInputName;
    ASSIGN_OR_RETURN(s->expr, ParseFilterChain(std::move(input), /*first_without_pipe=*/true));
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody({"endfilter"}, &s->body, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseWith(const Token& at) {
    auto s = NewStmt(Stmt::Kind::kWith, at);
    while (Peek().type != Tok::kBlockEnd) {
      if (!s->targets.empty()) RETURN_IF_ERROR(ExpectOp(","));
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      RETURN_IF_ERROR(ExpectOp("="));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpr(true));
      s->targets.push_back(std::move(name));
      s->values.push_back(std::move(value));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    RETURN_IF_ERROR(ParseBody({"endwith"}, &s->body, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  // ---- expressions ----

  // expr [, expr ...] -> a tuple when there is a comma.
  absl::StatusOr<ExprPtr> ParseTupleExpr(bool allow_cond) {
    const Token& at = Peek();
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpr(allow_cond));
    if (!IsOp(",")) return first;
    auto tuple = NewExpr(Expr::Kind::kTuple, at);
    tuple->args.push_back(std::move(first));
    while (IsOp(",")) {
      ++i_;
      if (Peek().type == Tok::kBlockEnd || Peek().type == Tok::kVarEnd || IsOp(")")) break;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(allow_cond));
      tuple->args.push_back(std::move(e));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpr(bool allow_cond) {
    if (!allow_cond) return ParseOr();
    const Token& at = Peek();
    ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    while (IsName("if")) {
      ++i_;
      auto cond = NewExpr(Expr::Kind::kCond, at);
      ASSIGN_OR_RETURN(cond->a, ParseOr());
      cond->b = std::move(e);
      if (IsName("else")) {
        ++i_;
        ASSIGN_OR_RETURN(cond->c, ParseExpr(true));
      }
      e = std::move(cond);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kOr, at);
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParseAnd());
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kAnd, at);
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParseNot());
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kNot, at);
      ASSIGN_OR_RETURN(e->a, ParseNot());
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    ExprPtr chain;  // kCompare once a second operator follows
    while (true) {
      BinOp op;
      if (IsOp("==")) {
        op = BinOp::kEq;
      } else if (IsOp("!=")) {
        op = BinOp::kNe;
      } else if (IsOp("<")) {
        op = BinOp::kLt;
      } else if (IsOp("<=")) {
        op = BinOp::kLe;
      } else if (IsOp(">")) {
        op = BinOp::kGt;
      } else if (IsOp(">=")) {
        op = BinOp::kGe;
      } else if (IsName("in")) {
        op = BinOp::kIn;
      } else if (IsName("not") && IsName("in", 1)) {
        op = BinOp::kNotIn;
        ++i_;
      } else {
        return chain ? std::move(chain) : std::move(left);
      }
      const Token& op_tok = Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      // a < b < c means (a < b and b < c), b evaluated once, as in Python.
      if (!chain) {
        chain = NewExpr(Expr::Kind::kCompare, op_tok);
        chain->args.push_back(std::move(left));
      }
      chain->ops.push_back(op);
      chain->args.push_back(std::move(right));
    }
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kBinary, at);
      e->op = at.text == "+" ? BinOp::kAdd : BinOp::kSub;
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParseConcat());
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kBinary, at);
      e->op = BinOp::kConcat;
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParseMath2());
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kBinary, at);
      e->op = at.text == "*"   ? BinOp::kMul
              : at.text == "/" ? BinOp::kDiv
              : at.text == "//" ? BinOp::kFloorDiv
                                : BinOp::kMod;
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParsePow());
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      const Token& at = Next();
      auto e = NewExpr(Expr::Kind::kBinary, at);
      e->op = BinOp::kPow;
      e->a = std::move(left);
      ASSIGN_OR_RETURN(e->b, ParseUnary(true));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token& at = Next();
      node = NewExpr(at.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, at);
      ASSIGN_OR_RETURN(node->a, ParseUnary(false));
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilters(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Peek();
    switch (tok.type) {
      case Tok::kName: {
        ++i_;
        const std::string& n = tok.text;
        if (n == "true" || n == "True" || n == "false" || n == "False") {
          auto e = NewExpr(Expr::Kind::kConst, tok);
          e->value = Value::Bool(n == "true" || n == "True");
          return e;
        }
        if (n == "none" || n == "None") {
          auto e = NewExpr(Expr::Kind::kConst, tok);
          e->value = Value::None();
          return e;
        }
        auto e = NewExpr(Expr::Kind::kName, tok);
        e->name = n;
        return e;
      }
      case Tok::kString: {
        std::string s;
        while (Peek().type == Tok::kString) s += Next().text;
        auto e = NewExpr(Expr::Kind::kConst, tok);
        e->value = Value::String(std::move(s));
        return e;
      }
      case Tok::kInt: {
        ++i_;
        auto e = NewExpr(Expr::Kind::kConst, tok);
        e->value = Value::Int(tok.int_value);
        return e;
      }
      case Tok::kFloat: {
        ++i_;
        auto e = NewExpr(Expr::Kind::kConst, tok);
        e->value = Value::Float(tok.float_value);
        return e;
      }
      case Tok::kOp:
        if (tok.text == "(") {
          ++i_;
          if (IsOp(")")) {
            ++i_;
            return NewExpr(Expr::Kind::kTuple, tok);
          }
          ASSIGN_OR_RETURN(ExprPtr first, ParseExpr(true));
          if (IsOp(")")) {
            ++i_;
            return first;
          }
          auto tuple = NewExpr(Expr::Kind::kTuple, tok);
          tuple->args.push_back(std::move(first));
          while (IsOp(",")) {
            ++i_;
            if (IsOp(")")) break;
            ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(true));
            tuple->args.push_back(std::move(e));
          }
          RETURN_IF_ERROR(ExpectOp(")"));
          return tuple;
        }
        if (tok.text == "[") {
          ++i_;
          auto list = NewExpr(Expr::Kind::kList, tok);
          while (!IsOp("]")) {
            if (!list->args.empty()) RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("]")) break;
            ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(true));
            list->args.push_back(std::move(e));
          }
          ++i_;
          return list;
        }
        if (tok.text == "{") {
          ++i_;
          auto dict = NewExpr(Expr::Kind::kDict, tok);
          while (!IsOp("}")) {
            if (!dict->args.empty()) RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("}")) break;
            ASSIGN_OR_RETURN(ExprPtr k, ParseExpr(true));
            RETURN_IF_ERROR(ExpectOp(":"));
            ASSIGN_OR_RETURN(ExprPtr v, ParseExpr(true));
            dict->args.push_back(std::move(k));
            dict->args2.push_back(std::move(v));
          }
          ++i_;
          return dict;
        }
        break;
      default:
        break;
    }
    return Error(tok, absl::StrCat("unexpected ", Describe(tok)));
  }

  absl::Status ParseCallArgs(Expr* call) {
    RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) {
        const bool star2 = IsOp("**");
        ++i_;
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpr(true));
        (star2 ? call->dyn_kwargs : call->dyn_args) = std::move(v);
        continue;
      }
      if (call->dyn_kwargs || (call->dyn_args && !(Peek().type == Tok::kName && IsOp("=", 1)))) {
        return Error(Peek(), "invalid syntax for function call expression");
      }
      if (Peek().type == Tok::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        ++i_;
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpr(true));
        call->kwargs.emplace_back(std::move(name), std::move(v));
      } else {
        if (!call->kwargs.empty()) {
          return Error(Peek(), "positional argument follows keyword argument");
        }
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpr(true));
        call->args.push_back(std::move(v));
      }
    }
    ++i_;
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        const Token& at = Next();
        if (Peek().type == Tok::kName) {
          auto e = NewExpr(Expr::Kind::kGetAttr, at);
          e->name = Next().text;
          e->a = std::move(node);
          node = std::move(e);
        } else if (Peek().type == Tok::kInt) {
          auto e = NewExpr(Expr::Kind::kGetItem, at);
          auto idx = NewExpr(Expr::Kind::kConst, Peek());
          idx->value = Value::Int(Next().int_value);
          e->a = std::move(node);
          e->b = std::move(idx);
          node = std::move(e);
        } else {
          return Error(Peek(), absl::StrCat("expected an attribute name after '.', got ",
                                            Describe(Peek())));
        }
      } else if (IsOp("[")) {
        const Token& at = Next();
        ExprPtr parts[3];
        int colons = 0;
        while (!IsOp("]")) {
          if (IsOp(":")) {
            ++i_;
            if (++colons > 2) return Error(Peek(), "too many ':' in slice");
            continue;
          }
          if (parts[colons]) return Error(Peek(), "expected ']' or ':' in subscript");
          ASSIGN_OR_RETURN(parts[colons], ParseExpr(true));
          if (IsOp(",")) return Error(Peek(), "tuple subscripts are not supported");
        }
        ++i_;
        if (colons == 0) {
          if (!parts[0]) return Error(at, "empty subscript");
          auto e = NewExpr(Expr::Kind::kGetItem, at);
          e->a = std::move(node);
          e->b = std::move(parts[0]);
          node = std::move(e);
        } else {
          auto e = NewExpr(Expr::Kind::kSlice, at);
          e->a = std::move(node);
          e->b = std::move(parts[0]);
          e->c = std::move(parts[1]);
          e->d = std::move(parts[2]);
          node = std::move(e);
        }
      } else if (IsOp("(")) {
        auto e = NewExpr(Expr::Kind::kCall, Peek());
        e->a = std::move(node);
        RETURN_IF_ERROR(ParseCallArgs(e.get()));
        node = std::move(e);
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr node, bool first_without_pipe) {
    bool first = first_without_pipe;
    while (first || IsOp("|")) {
      if (!first) ++i_;
      first = false;
      const Token& at = Peek();
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      while (IsOp(".")) {
        ++i_;
        ASSIGN_OR_RETURN(std::string part, ExpectName());
        name += "." + part;
      }
      auto e = NewExpr(Expr::Kind::kFilter, at);
      e->name = name;
      e->filter = FindFilter(name);
      e->a = std::move(node);
      if (IsOp("(")) RETURN_IF_ERROR(ParseCallArgs(e.get()));
      node = std::move(e);
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node, ParseFilterChain(std::move(node), false));
      } else if (IsName("is")) {
        ++i_;
        bool negated = false;
        if (IsName("not")) {
          ++i_;
          negated = true;
        }
        std::string name;
        const Token& name_tok = Peek();
        if (Peek().type == Tok::kName) {
          name = Next().text;
        } else {
          return Error(Peek(), absl::StrCat("expected token 'name', got ", Describe(Peek())));
        }
        while (IsOp(".")) {
          ++i_;
          ASSIGN_OR_RETURN(std::string part, ExpectName());
          name += "." + part;
        }
        auto e = NewExpr(Expr::Kind::kTest, name_tok);
        e->name = name;
        e->negated = negated;
        e->test = FindTest(name);
        e->a = std::move(node);
        if (IsOp("(")) {
          RETURN_IF_ERROR(ParseCallArgs(e.get()));
        } else {
          const Token& n = Peek();
          if (IsName("is")) return Error(n, "You cannot chain multiple tests with is");
          const bool arg_start =
              n.type == Tok::kString || n.type == Tok::kInt || n.type == Tok::kFloat ||
              (n.type == Tok::kName && n.text != "else" && n.text != "or" && n.text != "and" &&
               n.text != "if" && n.text != "in" && n.text != "not" && n.text != "recursive") ||
              IsOp("[") || IsOp("{");
          if (arg_start) {
            ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
            ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
            e->args.push_back(std::move(arg));
          }
        }
        node = std::move(e);
      } else {
        return node;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;
};

// Unknown filters and tests reject the template at parse time, except where Jinja's compiler is in
// a "soft" frame (an if statement's test and branches, a conditional expression) and defers the
// error to when the filter is actually called. Loops, macros and blocks nested inside an if get a
// fresh, non-soft frame, as in Jinja.
absl::Status CheckNames(const Expr& e, bool soft);

absl::Status CheckNames(const Body& body, bool soft);

absl::Status CheckNames(const ExprPtr& e, bool soft) {
  return e ? CheckNames(*e, soft) : absl::OkStatus();
}

absl::Status CheckNames(const Expr& e, bool soft) {
  if (e.kind == Expr::Kind::kCond) soft = true;
  if (!soft && e.kind == Expr::Kind::kFilter && e.filter == nullptr) {
    return ErrorAt(e.line, e.column, absl::StrCat("No filter named '", e.name, "'."));
  }
  if (!soft && e.kind == Expr::Kind::kTest && e.test == nullptr) {
    return ErrorAt(e.line, e.column, absl::StrCat("No test named '", e.name, "'."));
  }
  for (const ExprPtr* sub : {&e.a, &e.b, &e.c, &e.d, &e.dyn_args, &e.dyn_kwargs}) {
    RETURN_IF_ERROR(CheckNames(*sub, soft));
  }
  for (const ExprPtr& x : e.args) RETURN_IF_ERROR(CheckNames(x, soft));
  for (const ExprPtr& x : e.args2) RETURN_IF_ERROR(CheckNames(x, soft));
  for (const auto& [k, x] : e.kwargs) RETURN_IF_ERROR(CheckNames(x, soft));
  return absl::OkStatus();
}

absl::Status CheckNames(const Body& body, bool soft) {
  for (const StmtPtr& s : body) {
    switch (s->kind) {
      case Stmt::Kind::kIf:
        for (const auto& [cond, branch] : s->branches) {
          RETURN_IF_ERROR(CheckNames(cond, true));
          RETURN_IF_ERROR(CheckNames(branch, true));
        }
        RETURN_IF_ERROR(CheckNames(s->else_body, true));
        continue;
      case Stmt::Kind::kSetBlock:
      case Stmt::Kind::kFilterBlock:
        RETURN_IF_ERROR(CheckNames(s->expr, false));
        break;
      case Stmt::Kind::kFor:
        RETURN_IF_ERROR(CheckNames(s->expr, soft));
        RETURN_IF_ERROR(CheckNames(s->loop_filter, false));
        break;
      case Stmt::Kind::kMacro:
        break;
      case Stmt::Kind::kAutoescape:
        RETURN_IF_ERROR(CheckNames(s->expr, soft));
        RETURN_IF_ERROR(CheckNames(s->body, soft));
        continue;
      default:
        RETURN_IF_ERROR(CheckNames(s->expr, soft));
    }
    for (const auto& [name, def] : s->params) RETURN_IF_ERROR(CheckNames(def, false));
    for (const ExprPtr& v : s->values) RETURN_IF_ERROR(CheckNames(v, soft));
    RETURN_IF_ERROR(CheckNames(s->body, false));
    RETURN_IF_ERROR(CheckNames(s->else_body, false));
  }
  return absl::OkStatus();
}

std::string Normalize(absl::string_view source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

absl::StatusOr<Body> ParseTemplate(absl::string_view source, const ParseOptions& options) {
  Lexer lexer(Normalize(source, options.keep_trailing_newline), options);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens));
  ASSIGN_OR_RETURN(Body body, parser.ParseAll());
  RETURN_IF_ERROR(CheckNames(body, /*soft=*/false));
  return body;
}

}  // namespace tessera::jinja
