#pragma once
// What every subcommand that writes a checkpoint gives its user around the executor: a
// progress line on stderr, Ctrl-C that stops after the shard being written (a second one
// kills), and the hint to resume.

#include <string>

#include "qs/ckpt/job/executor.h"

namespace qs::cli {

// Runs `plan` with `options` (its on_progress and stop_requested are set here); warns about
// each committed shard of an earlier run that no longer matched its digest and was redone.
ExecutionReport execute_with_progress(const Plan& plan, ExecutionOptions options,
                                      const std::string& label);

// For an interrupted report: prints how far it got and how to finish; returns the exit code
// (130, as for SIGINT).
int report_interruption(const ExecutionReport& report);

}  // namespace qs::cli
