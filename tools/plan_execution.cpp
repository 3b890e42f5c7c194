#include "plan_execution.h"

#include <fmt/format.h>

#include <atomic>
#include <csignal>

#include "progress_line.h"

namespace qs::cli {
namespace {

std::atomic<bool> stop_requested{false};
extern "C" void request_stop(int) {
  stop_requested = true;
  std::signal(SIGINT, SIG_DFL);
}

}  // namespace

ExecutionReport execute_with_progress(const Plan& plan, ExecutionOptions options,
                                      const std::string& label) {
  ProgressLine progress(options.partition
                            ? fmt::format("{} part {}", label, partition_label(*options.partition))
                            : label,
                        plan.source_bytes(), plan.items.size());
  options.on_progress = [&](const ExecutionProgress& state) {
    progress.set_totals(state.total_source_bytes, state.total_items);
    progress.update(state.done_source_bytes, state.done_items);
  };
  stop_requested = false;
  options.stop_requested = &stop_requested;
  std::signal(SIGINT, request_stop);
  auto report = execute_plan(plan, options);
  std::signal(SIGINT, SIG_DFL);
  progress.finish();
  for (const auto& shard : report.redone_shards)
    fmt::print(stderr, "quantsmith: warning: {}: written again (an earlier run committed it)\n",
               shard);
  return report;
}

int report_interruption(const ExecutionReport& report) {
  fmt::print(stderr,
             "quantsmith: interrupted after {} of {} shards; run again with --resume to finish\n",
             report.shards_resumed + report.shards_written,
             report.part_shards ? report.part_shards : report.total_shards);
  return 130;
}

std::optional<Partition> partition_from_flag(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return parse_partition(text);
}

void print_part_status(const ExecutionReport& report, const Partition& partition,
                       const std::string& output) {
  if (report.already_finalized) {
    fmt::print("part {}: {} is already finalized; nothing to do\n", partition_label(partition),
               output);
    return;
  }
  fmt::print("part {}: {} of {} shard(s) written by this run ({} resumed); {}\n",
             partition_label(partition), report.shards_written, report.part_shards,
             report.shards_resumed,
             report.finalized_here ? fmt::format("every part is done: {} finalized", output)
             : report.finalized
                 ? fmt::format("another worker finalized {}", output)
                 : fmt::format("other parts are not done yet: the last worker finalizes {}, or "
                               "run `quantsmith finalize {}` when they are",
                               output, output));
}

nlohmann::ordered_json part_status_json(const ExecutionReport& report, const Partition& partition) {
  return {{"partition", partition_label(partition)},
          {"part_shards", report.part_shards},
          {"already_finalized", report.already_finalized},
          {"finalized", report.finalized || report.already_finalized}};
}

std::string part_share_line(const Plan& plan, std::uint64_t max_shard_bytes,
                            const Partition& partition) {
  const auto share = part_share(plan, max_shard_bytes, partition);
  const auto percent = [](std::uint64_t part, std::uint64_t whole) {
    return whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
  };
  if (share.shards == 0)
    return fmt::format("part {}: no shard of {} (more parts than the split can fill)",
                       partition_label(partition), share.total_shards);
  return fmt::format(
      "part {}: shards {}-{} of {} ({} of {} output, {:.1f}%; {:.1f}% of the estimated cost)",
      partition_label(partition), share.first_shard + 1, share.first_shard + share.shards,
      share.total_shards, human_bytes(share.output_bytes), human_bytes(share.total_output_bytes),
      percent(share.output_bytes, share.total_output_bytes),
      percent(share.cost, share.total_cost));
}

nlohmann::ordered_json part_share_json(const Plan& plan, std::uint64_t max_shard_bytes,
                                       const Partition& partition) {
  const auto share = part_share(plan, max_shard_bytes, partition);
  return {{"partition", partition_label(partition)},
          {"first_shard", share.first_shard + 1},
          {"shards", share.shards},
          {"total_shards", share.total_shards},
          {"output_bytes", share.output_bytes},
          {"total_output_bytes", share.total_output_bytes},
          {"cost", share.cost},
          {"total_cost", share.total_cost}};
}

void add_partition_option(CLI::App& command, std::string& partition) {
  command.add_option("--partition", partition,
                     "I/N: run part I (0 <= I < N) of the job split into N parts, one worker "
                     "each, all writing the same output directory (docs/partitioned-jobs.md); "
                     "the last worker to finish, or `quantsmith finalize OUT`, completes it");
}

}  // namespace qs::cli
