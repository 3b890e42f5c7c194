#pragma once
// The observer a calibration pass runs with: it hands run::LayerStatistics (the statistics
// `quantsmith calibrate` sums, with the same numerics) the inputs of the modules the plan
// calibrates and drops the rest, so a layer holds only the matrices its items read; it also
// times the summing for the job's stage report.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "qs/run/layer_statistics.h"
#include "qs/run/linear_observer.h"

namespace qs::pipeline {

class StatisticsCollector final : public run::LinearObserver {
 public:
  // `wanted(key)`: whether the plan reads this module's statistics (the experts' shared gate/up
  // input is asked for by its entry name, shared_gate_up_input).
  StatisticsCollector(std::uint32_t layer, std::uint64_t experts,
                      std::function<bool(const std::string&)> wanted);

  void observe(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
               std::uint64_t cols) override;
  void routed(std::uint64_t layer, const std::vector<std::uint64_t>& counts) override;
  void observe_all_experts_input(const std::string& experts_prefix, std::span<const float> inputs,
                                 std::uint64_t rows, std::uint64_t cols) override;

  // The finished statistics; the collector is spent afterwards.
  std::unique_ptr<run::LayerStatistics> take();
  // Seconds spent summing XᵀX.
  double seconds() const { return seconds_; }

 private:
  std::function<bool(const std::string&)> wanted_;
  std::unique_ptr<run::LayerStatistics> statistics_;
  double seconds_ = 0.0;
};

}  // namespace qs::pipeline
