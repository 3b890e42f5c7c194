#include "statistics_collector.h"

#include <chrono>

namespace qs::pipeline {
namespace {

// Adds the seconds `work` takes to `total`.
template <typename Work>
void timed(double& total, Work&& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

StatisticsCollector::StatisticsCollector(std::uint32_t layer, std::uint64_t experts,
                                         std::function<bool(const std::string&)> wanted)
    : wanted_(std::move(wanted)),
      statistics_(std::make_unique<run::LayerStatistics>(
          layer, run::LayerStatisticsOptions{experts, true})) {}

void StatisticsCollector::observe(const std::string& module, std::span<const float> inputs,
                                  std::uint64_t rows, std::uint64_t cols) {
  if (wanted_(module))
    timed(seconds_, [&] { statistics_->observe(module, inputs, rows, cols); });
}

void StatisticsCollector::routed(std::uint64_t layer, const std::vector<std::uint64_t>& counts) {
  statistics_->routed(layer, counts);
}

void StatisticsCollector::observe_all_experts_input(const std::string& experts_prefix,
                                                    std::span<const float> inputs,
                                                    std::uint64_t rows, std::uint64_t cols) {
  if (wanted_(shared_gate_up_input(experts_prefix)))
    timed(seconds_,
          [&] { statistics_->observe_all_experts_input(experts_prefix, inputs, rows, cols); });
}

std::unique_ptr<run::LayerStatistics> StatisticsCollector::take() {
  timed(seconds_, [&] { statistics_->finish(); });
  return std::move(statistics_);
}

}  // namespace qs::pipeline
