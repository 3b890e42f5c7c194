// quantsmith: one binary, one thin file per subcommand. This file only dispatches and turns
// errors into one line on stderr and an exit code.

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <vector>

#include "cli_support.h"
#include "qs/ckpt/core/error.h"
#include "subcommands.h"

int main(int argc, char** argv) {
  using namespace qs::cli;
  CLI::App app{"quantsmith: stream, quantize, splice and check huge MoE checkpoints", "quantsmith"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "quantsmith 0.1.0");

  std::vector<std::pair<CLI::App*, SubcommandRunner>> runners;
  for (auto registration : all_subcommands()) {
    auto before = app.get_subcommands({}).size();
    SubcommandRunner runner = registration(app);
    auto subcommands = app.get_subcommands({});
    if (subcommands.size() > before) runners.emplace_back(subcommands.back(), std::move(runner));
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  try {
    for (auto& [subcommand, runner] : runners)
      if (subcommand->parsed()) return runner();
  } catch (const qs::Error& error) {
    std::fprintf(stderr, "quantsmith: error: %s\n", error.what());
    return error.error_class() == qs::ErrorClass::BadInput ? kExitBadInput : kExitProblems;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "quantsmith: internal error: %s\n", error.what());
    return kExitProblems;
  }
  return kExitBadInput;
}
