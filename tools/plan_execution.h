#pragma once
// What every subcommand that writes a checkpoint gives its user around the executor: a
// progress line on stderr, Ctrl-C that stops after the shard being written (a second one
// kills), and the hint to resume; for one part of a partitioned job, what became of it.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli_support.h"

#include "qs/ckpt/job/executor.h"

namespace qs::cli {

// Runs `plan` with `options` (its on_progress and stop_requested are set here); warns about
// each committed shard of an earlier run that no longer matched its digest and was redone.
ExecutionReport execute_with_progress(const Plan& plan, ExecutionOptions options,
                                      const std::string& label);

// For an interrupted report: prints how far it got and how to finish; returns the exit code
// (130, as for SIGINT).
int report_interruption(const ExecutionReport& report);

// "--partition I/N" as given (empty: the whole job), checked before anything is opened.
std::optional<Partition> partition_from_flag(const std::string& text);

// For a partitioned run: one line on stdout saying what this worker did and whether the job
// is finalized (or who will finalize it); the same as JSON fields.
void print_part_status(const ExecutionReport& report, const Partition& partition,
                       const std::string& output);
nlohmann::ordered_json part_status_json(const ExecutionReport& report,
                                        const Partition& partition);

// --dry-run with --partition: which shards the part writes and its share of the job, as a
// line or as JSON.
std::string part_share_line(const Plan& plan, std::uint64_t max_shard_bytes,
                            const Partition& partition);
nlohmann::ordered_json part_share_json(const Plan& plan, std::uint64_t max_shard_bytes,
                                       const Partition& partition);

// The --partition option of every writing subcommand, with its help text.
void add_partition_option(CLI::App& command, std::string& partition);

}  // namespace qs::cli
