// The tessera binary: dispatches to subcommands implemented in the folders that own them.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/commands.h"

namespace {

void PrintUsage() {
  std::fprintf(stderr,
               "usage: tessera <command> [flags]\n\n"
               "commands:\n"
               "  make-model   write a deterministic random-weight checkpoint (HF layout)\n"
               "  generate     one-shot local generation\n"
               "  version      print the version\n\n"
               "Run 'tessera <command> --help' for a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  for (const tessera::cli::Command& c : tessera::cli::Commands()) {
    if (command == c.name) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "tessera: unknown command '%s'\n\n", command.c_str());
  PrintUsage();
  return 2;
}
