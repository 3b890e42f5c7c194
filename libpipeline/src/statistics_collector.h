#pragma once
// One decoder layer's calibration statistics, collected from the forward (a LinearObserver)
// for the modules the plan calibrates, and handed to the statistics board. The sums are those
// `quantsmith calibrate` stores: f32 inputs widened to f64 and summed in fixed BLAS tiles
// (blas::add_gram_upper), so a plan fed from here writes the bytes the two-step flow writes.

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "qs/pipeline/layer_statistics_board.h"
#include "qs/run/linear_observer.h"

namespace qs::pipeline {

class StatisticsCollector final : public run::LinearObserver {
 public:
  // `wanted(module)`: whether the plan reads this module's statistics (the experts' shared
  // gate/up input is asked for as "<experts prefix>.gate_up_input").
  StatisticsCollector(std::uint32_t layer, std::uint64_t experts,
                      std::function<bool(const std::string&)> wanted);

  void observe(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
               std::uint64_t cols) override;
  void routed(std::uint64_t, const std::vector<std::uint64_t>&) override {}
  void observe_all_experts_input(const std::string& experts_prefix, std::span<const float> inputs,
                                 std::uint64_t rows, std::uint64_t cols) override;

  // The layer's statistics (matrices mirrored to full); the collector is empty afterwards.
  LayerStatistics take();
  // Seconds spent summing XᵀX.
  double seconds() const { return seconds_; }

 private:
  struct Moments {
    std::uint64_t in_features = 0;
    std::uint64_t tokens = 0;
    double amax = 0.0;
    std::vector<double> sums;  // upper triangle while summing
  };
  void accumulate(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
                  std::uint64_t cols);

  std::uint32_t layer_;
  std::uint64_t experts_;
  std::function<bool(const std::string&)> wanted_;
  std::map<std::string, Moments> moments_;
  std::string shared_prefix_;
  double seconds_ = 0.0;
};

}  // namespace qs::pipeline
