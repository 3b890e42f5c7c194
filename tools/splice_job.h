#pragma once
// The splice job behind `splice` and `mtp inject` (which is a splice: the base is the
// quantized checkpoint, one rule takes the MTP layer from the other source): open the
// sources, plan (splice_plan.h), print the plan or run it, report.

#include <string>
#include <vector>

#include "cli_support.h"
#include "qs/ckpt/plan/splice_plan.h"

namespace qs::cli {

struct SpliceJobOptions {
  std::string format = "auto";
  bool dry_run = false;
  bool json = false;
  bool resume = false;
  bool force = false;
  std::string max_shard_size = "5GB";
  std::string max_buffer = "256MiB";
  std::string partition;
};

// --format, --dry-run, --json, --resume, --force, --max-shard-size, --max-buffer,
// --partition.
void add_splice_job_options(CLI::App& command, SpliceJobOptions& options);

// Returns the exit code. `label` names the job in progress lines and messages.
int run_splice(const std::string& output, const std::string& base,
               const std::vector<TakeRule>& rules, const SpliceJobOptions& options,
               const std::string& label);

}  // namespace qs::cli
