#pragma once
// The statistics the layer-pipelined quantize job hands its calibrated transforms: one decoder
// layer's XᵀX at a time, published by the driver thread when the layer's calibration pass is
// done and released once every item of the layer has been written. A transform asking for a
// module of a layer not yet published waits (the plan visits layers in order, so it waits for
// the next one only); when the driver fails, every waiting and later caller rethrows its error,
// and a cancelled job (the executor stopped) wakes them with "pipeline.cancelled".

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <memory>

#include "qs/ckpt/plan/calibration_statistics.h"
#include "qs/run/layer_statistics.h"

namespace qs::pipeline {

class LayerStatisticsBoard final : public CalibrationStatistics {
 public:
  // `promised` answers promised_in_features at plan time (from the model).
  explicit LayerStatisticsBoard(
      std::function<std::optional<std::uint64_t>(const std::string&)> promised);

  // `statistics` is finished (run::LayerStatistics::finish).
  void publish(std::uint32_t layer, std::unique_ptr<run::LayerStatistics> statistics);
  // Frees the layer's matrices; its entries stay (find hands out pointers to them).
  void release(std::uint32_t layer);
  // Every waiting and later caller rethrows `error`.
  void fail(std::exception_ptr error);
  // The job ended: waiting callers stop with "pipeline.cancelled".
  void cancel();

  // Waits for the module's layer. nullptr for a routed expert no token reached; a non-expert
  // module the forward never fed is BadInput "calibration.missing_module".
  const CalibrationEntry* find(const std::string& module) const override;
  std::vector<double> second_moments(const std::string& module) const override;
  std::optional<std::uint64_t> promised_in_features(const std::string& module) const override;

  std::uint64_t held_bytes() const;
  std::uint64_t peak_bytes() const;

 private:
  // With the lock held: waits until `layer` is published (or the job failed or ended).
  void wait_for_layer(std::unique_lock<std::mutex>& lock, std::uint32_t layer) const;

  std::function<std::optional<std::uint64_t>(const std::string&)> promised_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::set<std::uint32_t> published_;
  std::map<std::string, CalibrationEntry> entries_;  // node-stable: find returns pointers
  std::map<std::uint32_t, std::unique_ptr<run::LayerStatistics>> layers_;  // published, held
  std::exception_ptr failure_;
  bool cancelled_ = false;
  std::uint64_t held_bytes_ = 0;
  std::uint64_t peak_bytes_ = 0;
};

// The decoder layer of a module path (model.layers.L....), nullopt outside layers.
std::optional<std::uint32_t> module_layer(const std::string& module);

}  // namespace qs::pipeline
