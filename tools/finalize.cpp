// quantsmith finalize OUT: completes a partitioned job once every part is committed (the index,
// configs, manifest and job file a single-process run writes); partitioned_job.h.

#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "qs/ckpt/job/partitioned_job.h"

namespace qs::cli {
namespace {

struct FinalizeOptions {
  std::string output;
  bool json = false;
};

int run_finalize(const FinalizeOptions& options) {
  const auto report = finalize_partitioned_job(options.output);
  if (options.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"output", options.output},
                                              {"already_finalized", report.already_finalized},
                                              {"parts", report.parts},
                                              {"shards", report.shards}}
                           .dump(2));
  } else if (report.already_finalized) {
    fmt::print("finalize {}: already finalized; nothing to do\n", options.output);
  } else {
    fmt::print("finalize {}: {} part(s), {} shard(s): index, configs and manifest written\n",
               options.output, report.parts, report.shards);
  }
  return kExitOk;
}

}  // namespace

SubcommandRunner register_finalize(CLI::App& app) {
  auto options = std::make_shared<FinalizeOptions>();
  auto* command = app.add_subcommand(
      "finalize",
      "complete a partitioned job (quantize, splice or mtp extract run with --partition I/N) "
      "once every part is committed: checks each part against the job's fingerprint, then "
      "writes the index, configs, manifest and job file, byte-identical to a single-process "
      "run. The last worker does this itself; run it when that worker was stopped or to check");
  command->add_option("OUT", options->output, "the output directory every part wrote")->required();
  command->add_flag("--json", options->json, "machine-readable summary on stdout");
  return [options]() { return run_finalize(*options); };
}

}  // namespace qs::cli
