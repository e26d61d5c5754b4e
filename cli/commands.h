// The subcommand table of the tessera binary. Each command's implementation lives in the folder
// that owns it (worker/ for generate and make-model, coordinator/ for serve, ...).
#pragma once

#include <vector>

namespace tessera::cli {

struct Command {
  const char* name;
  const char* summary;
  // argv[0] is the command name; returns the process exit code.
  int (*run)(int argc, char** argv);
};

const std::vector<Command>& Commands();

}  // namespace tessera::cli
