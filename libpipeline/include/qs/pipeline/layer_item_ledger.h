#pragma once
// Where the executor is with each decoder layer's items, for the driver of the layer-pipelined
// quantize job: which calibrated item has started (its transform now waits for the layer's
// statistics), which items have finished, and which will not run at all because an earlier run
// committed them (resume). The executor's transform thread and reader report; the driver
// waits. Items are visited in plan order, which is layer-major (quantize_plan.h), so the driver
// only ever waits for the layer it is on.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace qs::pipeline {

class LayerItemLedger {
 public:
  // Registers a plan item of decoder layer `layer`; `calibrated` when its transform reads
  // statistics. Before the job starts.
  void add(std::size_t item, std::uint32_t layer, bool calibrated);

  void started(std::size_t item);
  void finished(std::size_t item);
  void skipped(std::size_t item);
  // The job ended: waiting drivers stop with "pipeline.cancelled".
  void cancel();

  // Whether any calibrated item of `layer` will run: waits, in plan order, until each is
  // skipped or one has started. False when the layer has none or all were committed before.
  bool wait_calibration_needed(std::uint32_t layer);
  // Waits until every item of `layer` has finished or was skipped.
  void wait_layer_done(std::uint32_t layer);

  bool has_layer(std::uint32_t layer) const { return layers_.contains(layer); }
  bool has_calibrated_items(std::uint32_t layer) const;
  std::uint32_t last_layer() const { return layers_.empty() ? 0 : layers_.rbegin()->first; }
  std::uint32_t layer_of(std::size_t item) const { return layer_of_.at(item); }
  bool follows(std::size_t item) const { return layer_of_.contains(item); }

 private:
  enum class State : std::uint8_t { Pending, Started, Finished, Skipped };
  struct Layer {
    std::vector<std::size_t> items;       // plan order
    std::vector<std::size_t> calibrated;  // plan order
  };
  void set(std::size_t item, State state);
  void throw_if_cancelled() const;

  std::map<std::uint32_t, Layer> layers_;
  std::map<std::size_t, std::uint32_t> layer_of_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::size_t, State> states_;
  bool cancelled_ = false;
};

}  // namespace qs::pipeline
