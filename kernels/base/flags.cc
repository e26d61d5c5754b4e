#include "kernels/base/flags.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"

namespace tessera {

FlagParser::FlagParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void FlagParser::AddString(std::string name, std::string* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), *value, false,
                    [value](absl::string_view v) {
                      *value = std::string(v);
                      return true;
                    }});
}
void FlagParser::AddInt(std::string name, int64_t* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), absl::StrCat(*value), false,
                    [value](absl::string_view v) { return absl::SimpleAtoi(v, value); }});
}
void FlagParser::AddInt(std::string name, int* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), absl::StrCat(*value), false,
                    [value](absl::string_view v) { return absl::SimpleAtoi(v, value); }});
}
void FlagParser::AddDouble(std::string name, double* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), absl::StrCat(*value), false,
                    [value](absl::string_view v) { return absl::SimpleAtod(v, value); }});
}
void FlagParser::AddFloat(std::string name, float* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), absl::StrCat(*value), false,
                    [value](absl::string_view v) { return absl::SimpleAtof(v, value); }});
}
void FlagParser::AddBool(std::string name, bool* value, std::string help) {
  flags_.push_back({std::move(name), std::move(help), *value ? "true" : "false", true,
                    [value](absl::string_view v) { return absl::SimpleAtob(v, value); }});
}

FlagParser::Flag* FlagParser::Find(absl::string_view name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool FlagParser::WasSet(absl::string_view name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return f.was_set;
  }
  return false;
}

absl::Status FlagParser::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return absl::CancelledError(Usage());
    if (!absl::StartsWith(arg, "--")) {
      positional_.emplace_back(arg);
      continue;
    }
    arg.remove_prefix(2);
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see 'tessera ", command_, " --help')"));
    }
    if (!has_value) {
      if (flag->is_bool) {
        value = "true";
      } else {
        if (i + 1 >= argc) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = argv[++i];
      }
    }
    if (!flag->set(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid value '", value, "' for flag --", name));
    }
    flag->was_set = true;
  }
  return absl::OkStatus();
}

std::string FlagParser::Usage() const {
  std::string out = absl::StrCat("usage: tessera ", command_, " [flags]\n", summary_, "\n\nflags:\n");
  for (const Flag& f : flags_) {
    absl::StrAppend(&out, "  --", f.name, f.is_bool ? "" : " VALUE", "\n      ", f.help);
    if (!f.default_text.empty()) absl::StrAppend(&out, " (default: ", f.default_text, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

int RunCommand(FlagParser& parser, int argc, char** argv,
               const std::function<absl::Status()>& body) {
  absl::Status status = parser.Parse(argc, argv);
  if (absl::IsCancelled(status)) {
    std::fputs(std::string(status.message()).c_str(), stdout);
    return 0;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "tessera: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  status = body();
  if (!status.ok()) {
    std::fprintf(stderr, "tessera %s: %s\n", argv[0], std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace tessera
