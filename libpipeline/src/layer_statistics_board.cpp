#include "qs/pipeline/layer_statistics_board.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs::pipeline {

std::optional<std::uint32_t> module_layer(const std::string& module) {
  return parse_tensor_name(module + ".weight").layer;
}

LayerStatisticsBoard::LayerStatisticsBoard(
    std::function<std::optional<std::uint64_t>(const std::string&)> promised)
    : promised_(std::move(promised)) {}

void LayerStatisticsBoard::publish(std::uint32_t layer,
                                   std::unique_ptr<run::LayerStatistics> statistics) {
  {
    std::lock_guard lock(mutex_);
    for (const auto& entry : statistics->entries()) entries_[entry.module] = entry;
    held_bytes_ += statistics->bytes_held();
    peak_bytes_ = std::max(peak_bytes_, held_bytes_);
    layers_[layer] = std::move(statistics);
    published_.insert(layer);
  }
  changed_.notify_all();
}

void LayerStatisticsBoard::release(std::uint32_t layer) {
  std::lock_guard lock(mutex_);
  const auto found = layers_.find(layer);
  if (found == layers_.end()) return;
  held_bytes_ -= found->second->bytes_held();
  layers_.erase(found);
}

void LayerStatisticsBoard::fail(std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = std::move(error);
  }
  changed_.notify_all();
}

void LayerStatisticsBoard::cancel() {
  {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
  }
  changed_.notify_all();
}

void LayerStatisticsBoard::wait_for_layer(std::unique_lock<std::mutex>& lock,
                                          std::uint32_t layer) const {
  changed_.wait(lock, [&] { return failure_ || cancelled_ || published_.contains(layer); });
  if (failure_) std::rethrow_exception(failure_);
  if (!published_.contains(layer))
    throw Error(ErrorClass::Internal, "pipeline.cancelled",
                "the job ended before this layer was calibrated");
}

const CalibrationEntry* LayerStatisticsBoard::find(const std::string& module) const {
  const auto layer = module_layer(module);
  if (!layer)
    throw Error(ErrorClass::Internal, "pipeline.not_in_layer",
                "calibrated module outside the decoder layers", {}, module);
  std::unique_lock lock(mutex_);
  wait_for_layer(lock, *layer);
  if (const auto found = entries_.find(module); found != entries_.end()) return &found->second;
  if (parse_tensor_name(module + ".weight").expert) return nullptr;
  throw_bad_input("calibration.missing_module",
                  fmt::format("the forward of layer {} fed no inputs to this Linear, so it has no "
                              "calibration statistics",
                              *layer),
                  {}, module);
}

std::vector<double> LayerStatisticsBoard::second_moments(const std::string& module) const {
  const CalibrationEntry* entry = find(module);
  if (!entry)
    throw_bad_input("calibration.missing_module", "no statistics for this module", {}, module);
  std::lock_guard lock(mutex_);
  const auto found = layers_.find(*module_layer(module));
  if (found == layers_.end())
    throw Error(ErrorClass::Internal, "pipeline.released",
                "statistics asked for after their layer was released", {}, module);
  const auto matrix = found->second->matrix(entry->module);
  return {matrix.begin(), matrix.end()};
}

std::optional<std::uint64_t> LayerStatisticsBoard::promised_in_features(
    const std::string& module) const {
  return promised_(module);
}

std::uint64_t LayerStatisticsBoard::held_bytes() const {
  std::lock_guard lock(mutex_);
  return held_bytes_;
}

std::uint64_t LayerStatisticsBoard::peak_bytes() const {
  std::lock_guard lock(mutex_);
  return peak_bytes_;
}

}  // namespace qs::pipeline
