// A small command-line flag parser for tessera's subcommands.
//
// Flags are "--name value" or "--name=value"; booleans are "--name" (or --name=true/false).
// Unknown flags, missing values and malformed numbers are errors naming the flag. "--help" makes
// Parse() return a CANCELLED status whose message is the usage text. Not thread safe (build and
// parse on one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tessera {

class FlagParser {
 public:
  FlagParser(std::string command, std::string summary);

  void AddString(std::string name, std::string* value, std::string help);
  void AddInt(std::string name, int64_t* value, std::string help);
  void AddInt(std::string name, int* value, std::string help);
  void AddDouble(std::string name, double* value, std::string help);
  void AddFloat(std::string name, float* value, std::string help);
  void AddBool(std::string name, bool* value, std::string help);

  // Parses argv[1..argc) (argv[0] is the command name). Records which flags were given.
  absl::Status Parse(int argc, char** argv);
  bool WasSet(absl::string_view name) const;
  // Positional arguments (anything not starting with "--").
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    bool is_bool = false;
    std::function<bool(absl::string_view)> set;
    bool was_set = false;
  };
  Flag* Find(absl::string_view name);

  std::string command_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
};

// Runs a subcommand body: parses flags, prints usage on --help (exit 0) or the error on bad flags
// (exit 2), otherwise calls body(); a non-OK status from the body is printed as
// "tessera <command>: <message>" with exit 1.
int RunCommand(FlagParser& parser, int argc, char** argv, const std::function<absl::Status()>& body);

}  // namespace tessera
