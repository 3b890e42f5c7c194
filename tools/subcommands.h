#pragma once
// The table of subcommands. Adding one: write tools/<name>.cpp with a register_<name>
// function and list it here.

#include <vector>

#include "cli_support.h"

namespace qs::cli {

SubcommandRunner register_inspect(CLI::App& app);
SubcommandRunner register_validate(CLI::App& app);
SubcommandRunner register_synth(CLI::App& app);
SubcommandRunner register_quantize(CLI::App& app);
SubcommandRunner register_eval(CLI::App& app);
SubcommandRunner register_generate(CLI::App& app);
SubcommandRunner register_calibrate(CLI::App& app);
SubcommandRunner register_splice(CLI::App& app);
SubcommandRunner register_mtp(CLI::App& app);
SubcommandRunner register_recipe(CLI::App& app);
SubcommandRunner register_finalize(CLI::App& app);
SubcommandRunner register_dequantize(CLI::App& app);

// In the order `quantsmith --help` lists them; one line each.
// clang-format off
inline std::vector<SubcommandRegistration> all_subcommands() {
  return {
      register_inspect,
      register_validate,
      register_synth,
      register_quantize,
      register_splice,
      register_mtp,
      register_finalize,
      register_dequantize,
      register_eval,
      register_generate,
      register_calibrate,
      register_recipe,
  };
}
// clang-format on

}  // namespace qs::cli
