#include "qs/run/layer_statistics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::run {
namespace {

// model.layers.L.mlp.experts for a routed expert's module path.
std::string experts_prefix_of(const std::string& module) {
  return module.substr(0, module.rfind(".experts.") + std::string_view(".experts").size());
}

}  // namespace

LayerStatistics::LayerStatistics(std::uint64_t layer, LayerStatisticsOptions options)
    : layer_(layer), options_(options) {}

void LayerStatistics::check_accumulating(const std::string& module) const {
  if (finished_)
    throw Error(ErrorClass::Internal, "calibration.finished",
                "layer statistics observed after finish()", {}, module);
}

void LayerStatistics::observe(const std::string& module, std::span<const float> inputs,
                              std::uint64_t rows, std::uint64_t cols) {
  accumulate(module, inputs, rows, cols);
}

void LayerStatistics::routed(std::uint64_t layer, const std::vector<std::uint64_t>& counts) {
  routing_[layer] = counts;
}

void LayerStatistics::observe_all_experts_input(const std::string& experts_prefix,
                                                std::span<const float> inputs,
                                                std::uint64_t rows, std::uint64_t cols) {
  all_experts_prefix_ = experts_prefix;
  accumulate(shared_gate_up_input(experts_prefix), inputs, rows, cols);
}

void LayerStatistics::accumulate(const std::string& module, std::span<const float> inputs,
                                 std::uint64_t rows, std::uint64_t cols) {
  check_accumulating(module);
  Moments& moments = moments_[module];
  if (moments.sums.empty()) {
    moments.in_features = cols;
    moments.sums.assign(cols * cols, 0.0);
    bytes_held_ += matrix_bytes(cols);
  } else if (moments.in_features != cols) {
    throw Error(ErrorClass::Internal, "calibration.width",
                fmt::format("layer {}: inputs of width {} after {}", layer_, cols,
                            moments.in_features),
                {}, module);
  }
  std::vector<double> widened(inputs.begin(), inputs.begin() + rows * cols);
  for (std::size_t i = 0; i < widened.size(); ++i) {
    // NaN and Inf would spread through the whole matrix (and every Hessian factored from it);
    // reject them here, where the layer and module are known.
    if (!std::isfinite(widened[i]))
      throw_bad_input("calibration.non_finite_activation",
                      fmt::format("layer {}: the input of this module holds {} (token row {}, "
                                  "column {}); the model's weights or the tokens are broken",
                                  layer_, std::isnan(widened[i]) ? "NaN" : "Inf", i / cols,
                                  i % cols),
                      {}, module);
    moments.amax = std::max(moments.amax, std::fabs(widened[i]));
  }
  // Fixed tiles, each one single-threaded BLAS call: the same sums whatever the thread count.
  blas::add_gram_upper(rows, cols, widened.data(), moments.sums.data());
  moments.tokens += rows;
}

// Routed calibration: the sums over the experts (in expert order, so the result does not
// depend on how names sort) of the gate_proj inputs (up_proj sees the same ones) and of the
// down_proj inputs.
void LayerStatistics::add_pooled(const std::string& experts_prefix) {
  for (const auto& [pooled, projection] :
       {std::pair{pooled_gate_up_input(experts_prefix), "gate_proj"},
        std::pair{pooled_down_input(experts_prefix), "down_proj"}}) {
    Moments sum;
    for (std::uint64_t e = 0; e < options_.routed_experts; ++e) {
      const auto found = moments_.find(fmt::format("{}.{}.{}", experts_prefix, e, projection));
      if (found == moments_.end()) continue;  // the router sent it nothing
      const Moments& expert = found->second;
      if (sum.sums.empty()) {
        sum.in_features = expert.in_features;
        sum.sums.assign(expert.sums.size(), 0.0);
      }
      for (std::size_t i = 0; i < sum.sums.size(); ++i) sum.sums[i] += expert.sums[i];
      sum.tokens += expert.tokens;
      sum.amax = std::max(sum.amax, expert.amax);
    }
    if (sum.sums.empty()) continue;
    bytes_held_ += matrix_bytes(sum.in_features);
    moments_[pooled] = std::move(sum);
  }
}

void LayerStatistics::finish() {
  if (finished_) return;
  for (auto& [module, moments] : moments_) {
    const std::uint64_t k = moments.in_features;
    for (std::uint64_t i = 0; i < k; ++i)
      for (std::uint64_t j = 0; j < i; ++j) moments.sums[i * k + j] = moments.sums[j * k + i];
  }
  if (all_experts_prefix_.empty() && options_.pool_experts) {
    std::vector<std::string> prefixes;
    for (const auto& [module, moments] : moments_) {
      const auto parsed = parse_tensor_name(module + ".weight");
      if (parsed.role != TensorRole::ExpertGate) continue;
      const auto prefix = experts_prefix_of(module);
      if (std::find(prefixes.begin(), prefixes.end(), prefix) == prefixes.end())
        prefixes.push_back(prefix);
    }
    for (const auto& prefix : prefixes) add_pooled(prefix);
  }
  for (const auto& [module, moments] : moments_)
    entries_.push_back({module, moments.in_features, moments.tokens, {}, 0, 0, moments.amax});
  if (!all_experts_prefix_.empty()) {
    const std::string holder = shared_gate_up_input(all_experts_prefix_);
    const Moments& shared = moments_.at(holder);
    for (std::uint64_t e = 0; e < options_.routed_experts; ++e)
      for (const char* projection : {"gate_proj", "up_proj"})
        entries_.push_back({fmt::format("{}.{}.{}", all_experts_prefix_, e, projection),
                            shared.in_features, shared.tokens, holder, 0, 0, shared.amax});
  }
  for (std::size_t i = 0; i < entries_.size(); ++i) entry_of_module_[entries_[i].module] = i;
  finished_ = true;
}

const CalibrationEntry* LayerStatistics::find(const std::string& module) const {
  const auto found = entry_of_module_.find(module);
  return found == entry_of_module_.end() ? nullptr : &entries_[found->second];
}

std::span<const double> LayerStatistics::matrix(const std::string& module) const {
  const CalibrationEntry* entry = find(module);
  if (!entry)
    throw_bad_input("calibration.missing_module",
                    fmt::format("layer {}: no statistics for this module", layer_), {}, module);
  const auto& holder = entry->shared_with.empty() ? entry->module : entry->shared_with;
  return moments_.at(holder).sums;
}

std::vector<double> LayerStatistics::second_moments(const std::string& module) const {
  const auto values = matrix(module);
  return {values.begin(), values.end()};
}

void LayerStatistics::flush(CalibrationStoreWriter& writer) {
  finish();
  for (const auto& entry : entries_) {
    if (entry.shared_with.empty())
      writer.add(entry.module, entry.in_features, entry.tokens, moments_.at(entry.module).sums,
                 entry.input_amax);
    else
      writer.add_shared(entry.module, entry.shared_with, entry.tokens);
  }
  for (const auto& [layer, counts] : routing_) writer.set_routing(layer, counts);
  moments_.clear();
  entries_.clear();
  entry_of_module_.clear();
  routing_.clear();
  bytes_held_ = 0;
}

}  // namespace qs::run
