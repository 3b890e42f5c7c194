#include "qs/pipeline/layer_item_ledger.h"

#include "qs/ckpt/core/error.h"

namespace qs::pipeline {

void LayerItemLedger::add(std::size_t item, std::uint32_t layer, bool calibrated) {
  auto& entry = layers_[layer];
  entry.items.push_back(item);
  if (calibrated) entry.calibrated.push_back(item);
  layer_of_[item] = layer;
  states_[item] = State::Pending;
}

void LayerItemLedger::set(std::size_t item, State state) {
  {
    std::lock_guard lock(mutex_);
    states_[item] = state;
  }
  changed_.notify_all();
}

void LayerItemLedger::started(std::size_t item) { set(item, State::Started); }
void LayerItemLedger::finished(std::size_t item) { set(item, State::Finished); }
void LayerItemLedger::skipped(std::size_t item) { set(item, State::Skipped); }

void LayerItemLedger::cancel() {
  {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
  }
  changed_.notify_all();
}

void LayerItemLedger::throw_if_cancelled() const {
  if (cancelled_)
    throw Error(ErrorClass::Internal, "pipeline.cancelled", "the job ended before this layer");
}

bool LayerItemLedger::has_calibrated_items(std::uint32_t layer) const {
  const auto found = layers_.find(layer);
  return found != layers_.end() && !found->second.calibrated.empty();
}

bool LayerItemLedger::wait_calibration_needed(std::uint32_t layer) {
  const auto found = layers_.find(layer);
  if (found == layers_.end()) return false;
  std::unique_lock lock(mutex_);
  for (const std::size_t item : found->second.calibrated) {
    changed_.wait(lock, [&] { return cancelled_ || states_.at(item) != State::Pending; });
    throw_if_cancelled();
    if (states_.at(item) != State::Skipped) return true;
  }
  return false;
}

void LayerItemLedger::wait_layer_done(std::uint32_t layer) {
  const auto found = layers_.find(layer);
  if (found == layers_.end()) return;
  std::unique_lock lock(mutex_);
  for (const std::size_t item : found->second.items) {
    changed_.wait(lock, [&] {
      const State state = states_.at(item);
      return cancelled_ || state == State::Finished || state == State::Skipped;
    });
    throw_if_cancelled();
  }
}

}  // namespace qs::pipeline
