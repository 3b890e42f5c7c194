#include "statistics_collector.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "qs/ckpt/core/error.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::pipeline {

StatisticsCollector::StatisticsCollector(std::uint32_t layer, std::uint64_t experts,
                                         std::function<bool(const std::string&)> wanted)
    : layer_(layer), experts_(experts), wanted_(std::move(wanted)) {}

void StatisticsCollector::observe(const std::string& module, std::span<const float> inputs,
                                  std::uint64_t rows, std::uint64_t cols) {
  if (wanted_(module)) accumulate(module, inputs, rows, cols);
}

void StatisticsCollector::observe_all_experts_input(const std::string& experts_prefix,
                                                    std::span<const float> inputs,
                                                    std::uint64_t rows, std::uint64_t cols) {
  const std::string holder = experts_prefix + ".gate_up_input";
  if (!wanted_(holder)) return;
  shared_prefix_ = experts_prefix;
  accumulate(holder, inputs, rows, cols);
}

void StatisticsCollector::accumulate(const std::string& module, std::span<const float> inputs,
                                     std::uint64_t rows, std::uint64_t cols) {
  const auto start = std::chrono::steady_clock::now();
  Moments& moments = moments_[module];
  if (moments.sums.empty()) {
    moments.in_features = cols;
    moments.sums.assign(cols * cols, 0.0);
  }
  std::vector<double> widened(inputs.begin(), inputs.begin() + rows * cols);
  for (double value : widened) {
    if (!std::isfinite(value))
      throw_bad_input("calibration.non_finite",
                      fmt::format("the inputs of this Linear in layer {} hold NaN or Inf during "
                                  "calibration (the layers before it produce them)",
                                  layer_),
                      {}, module);
    moments.amax = std::max(moments.amax, std::fabs(value));
  }
  blas::add_gram_upper(rows, cols, widened.data(), moments.sums.data());
  moments.tokens += rows;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

LayerStatistics StatisticsCollector::take() {
  LayerStatistics statistics;
  for (auto& [module, moments] : moments_) {
    const std::uint64_t k = moments.in_features;
    for (std::uint64_t i = 0; i < k; ++i)
      for (std::uint64_t j = 0; j < i; ++j) moments.sums[i * k + j] = moments.sums[j * k + i];
    statistics.entries.push_back({module, k, moments.tokens, {}, 0, 0, moments.amax});
    statistics.matrices[module] = std::move(moments.sums);
  }
  if (!shared_prefix_.empty()) {
    const std::string holder = shared_prefix_ + ".gate_up_input";
    const auto& moments = moments_.at(holder);
    for (std::uint64_t e = 0; e < experts_; ++e)
      for (const char* projection : {"gate_proj", "up_proj"})
        statistics.entries.push_back({fmt::format("{}.{}.{}", shared_prefix_, e, projection),
                                      moments.in_features, moments.tokens, holder, 0, 0,
                                      moments.amax});
  }
  moments_.clear();
  shared_prefix_.clear();
  return statistics;
}

}  // namespace qs::pipeline
