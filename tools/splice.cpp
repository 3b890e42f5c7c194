// quantsmith splice OUT --base A --take B:SELECTOR ...: a hybrid checkpoint, module by module
// from several sources, with one quantization config for the mixture (splice_plan.h).

#include <memory>

#include "cli_support.h"
#include "splice_job.h"

namespace qs::cli {
namespace {

struct SpliceOptions {
  std::string output;
  std::string base;
  std::vector<std::string> takes;
  SpliceJobOptions job;
};

SubcommandRunner make_runner(const std::shared_ptr<SpliceOptions>& options) {
  return [options]() {
    std::vector<TakeRule> rules;
    for (const auto& text : options->takes) rules.push_back(parse_take_rule(text));
    return run_splice(options->output, options->base, rules, options->job, "splice");
  };
}

}  // namespace

SubcommandRunner register_splice(CLI::App& app) {
  auto options = std::make_shared<SpliceOptions>();
  auto* command = app.add_subcommand(
      "splice",
      "hybrid checkpoint: every module from the base, except those a --take rule selects from "
      "its source (first matching rule wins); weights move with their scales, zero points and "
      "global scales, and config.json gets one quantization_config for the mixture");
  command->add_option("OUT", options->output, "output directory (new or empty)")->required();
  command->add_option("--base", options->base, "checkpoint every module comes from by default")
      ->required();
  command
      ->add_option("--take", options->takes,
                   "SOURCE:SELECTOR, repeatable: modules SELECTOR matches come from SOURCE. "
                   "SELECTOR is ';'-separated recipe match keys: category=routed_expert,... "
                   "role=expert.gate,... module=<glob or re:regex> layers=3-77 mtp=true; a bare "
                   "category name or 'mtp' is shorthand. SOURCE ends at the first ':'")
      ->required();
  add_splice_job_options(*command, options->job);
  return make_runner(options);
}

}  // namespace qs::cli
