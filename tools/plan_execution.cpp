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
  ProgressLine progress(label, plan.source_bytes(), plan.items.size());
  options.on_progress = [&](const ExecutionProgress& state) {
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
             report.shards_resumed + report.shards_written, report.total_shards);
  return 130;
}

}  // namespace qs::cli
