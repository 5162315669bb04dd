// The three programs' command-line parse: one way to answer --help, a bad flag and an unknown
// subcommand.
#pragma once
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <string>

#include "pae/util/error.h"

namespace pae::programs {

/// Parses argv into `app`. Returns -1 when the program goes on, else its exit status: 0 after
/// --help, kUserErrorExit after a bad command line (CLI11's message), or a first word that names
/// none of the app's subcommands (CLI11 would answer "A subcommand is required").
inline int parse_command_line(CLI::App& app, int argc, char** argv) {
  const auto subcommands = app.get_subcommands([](CLI::App*) { return true; });
  if (argc > 1 && argv[1][0] != '-' && !subcommands.empty()) {
    std::string names;
    bool known = false;
    for (const auto* sub : subcommands) {
      known = known || sub->check_name(argv[1]);
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      spdlog::error("unknown subcommand '{}': expected one of {} (see --help)", argv[1], names);
      return kUserErrorExit;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUserErrorExit;
  }
  return -1;
}

}  // namespace pae::programs
