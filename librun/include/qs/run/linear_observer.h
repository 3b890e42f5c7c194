#pragma once
// A hook that sees what every Linear of the forward is fed: calibration captures XᵀX with it.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qs/run/tensor_ops.h"
#include "qs/run/weight_loader.h"

namespace qs::run {

class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // `rows` input rows of width `cols` fed to Linear `module` (checkpoint module path).
  virtual void observe(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
                       std::uint64_t cols) = 0;
  // How many tokens the router of MoE layer `layer` sent to each expert.
  virtual void routed(std::uint64_t layer, const std::vector<std::uint64_t>& expert_counts) = 0;
  // All-experts calibration: the one input every routed expert's gate_proj and up_proj saw
  // (all tokens) in MoE layer `layer`; `experts_prefix` is model.layers.L.mlp.experts.
  virtual void observe_all_experts_input(const std::string& experts_prefix,
                                         std::span<const float> inputs, std::uint64_t rows,
                                         std::uint64_t cols) = 0;
};

// linear() that first shows the observer (if any) its inputs.
inline std::vector<float> observed_linear(const WeightLoader& weights, LinearObserver* observer,
                                          const std::string& module, std::span<const float> x,
                                          std::uint64_t rows) {
  const Matrix matrix = weights.linear(module);
  if (observer) observer->observe(module, x, rows, matrix.cols);
  return linear(x, rows, matrix);
}

}  // namespace qs::run
