#pragma once
// One decoder layer's calibration statistics, held in memory: per Linear the sum of its input
// second moments XᵀX (f64), the token rows summed and the input amax, plus the router's expert
// counts. It is the LinearObserver a layer's forward is run with; once the layer has run,
// finish() completes the matrices and the object serves them as CalibrationStatistics (the
// layer-pipelined quantize job) or flush() hands them to the statistics file (`calibrate`).
//
// Numerics: the inputs are widened to f64 and summed into the upper triangle with
// blas::add_gram_upper (fixed tiles, one single-threaded BLAS call each), so the sums are the
// same at any thread count. finish() mirrors the upper triangle into the lower one.
//
// Entries it serves, besides one per observed Linear:
//  * all-experts calibration: `<experts>.gate_up_input`, the one input every routed expert's
//    gate_proj and up_proj saw (all tokens); each expert's gate_proj/up_proj entry points at it
//    (`shared_with`), so quantizers factor it once per layer;
//  * routed calibration of a MoE layer: the pooled statistics `<experts>.pooled_gate_up_input`
//    and `<experts>.pooled_down_input`, the sums over the experts of their gate/up and down
//    inputs' XᵀX (tokens: the sum of the experts' token counts). Experts the router gave few or
//    no tokens borrow from them (qs/quant/blended_statistics.h).
// where <experts> is model.layers.L.mlp.experts (names in qs/ckpt/plan/calibration_statistics.h).

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/plan/calibration_statistics.h"
#include "qs/run/linear_observer.h"

namespace qs {
class CalibrationStoreWriter;
}

namespace qs::run {

struct LayerStatisticsOptions {
  std::uint64_t routed_experts = 0;  // experts per MoE layer (names the shared entries)
  bool pool_experts = true;          // routed calibration: add the pooled entries
};

class LayerStatistics final : public LinearObserver, public CalibrationStatistics {
 public:
  // `layer` names the decoder layer in errors (the MTP layer is num_hidden_layers).
  LayerStatistics(std::uint64_t layer, LayerStatisticsOptions options);

  // LinearObserver. Throws BadInput "calibration.non_finite_activation" naming the layer and
  // module when an input holds NaN or Inf (the sums would be poisoned silently otherwise).
  void observe(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
               std::uint64_t cols) override;
  void routed(std::uint64_t layer, const std::vector<std::uint64_t>& expert_counts) override;
  void observe_all_experts_input(const std::string& experts_prefix, std::span<const float> inputs,
                                 std::uint64_t rows, std::uint64_t cols) override;

  // Ends accumulation: mirrors the matrices, adds the pooled sums and builds the entries.
  // Observing after it is an internal error.
  void finish();
  bool finished() const { return finished_; }

  // CalibrationStatistics (after finish()).
  const CalibrationEntry* find(const std::string& module) const override;
  std::vector<double> second_moments(const std::string& module) const override;
  // The matrix without a copy (K·K, full symmetric), through `shared_with`.
  std::span<const double> matrix(const std::string& module) const;
  const std::vector<CalibrationEntry>& entries() const { return entries_; }
  const std::map<std::uint64_t, std::vector<std::uint64_t>>& routing() const { return routing_; }

  // Bytes of statistics held now (the matrices; entries and counts are negligible). The
  // pipelined job budgets and reports this; matrix_bytes gives the cost of one K-wide matrix
  // ahead of time.
  std::uint64_t bytes_held() const { return bytes_held_; }
  static std::uint64_t matrix_bytes(std::uint64_t in_features) {
    return in_features * in_features * sizeof(double);
  }
  // Matrices held (entries that are not shared), for the caller's summary.
  std::uint64_t stored_matrices() const { return moments_.size(); }

  // Writes every entry and the routing counts to `writer` (finish() first if not yet), then
  // frees everything: the object is spent.
  void flush(CalibrationStoreWriter& writer);

 private:
  struct Moments {
    std::uint64_t in_features = 0;
    std::uint64_t tokens = 0;
    double amax = 0.0;
    std::vector<double> sums;  // K·K; upper triangle until finish()
  };
  void accumulate(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
                  std::uint64_t cols);
  void add_pooled(const std::string& experts_prefix);
  void check_accumulating(const std::string& module) const;

  std::uint64_t layer_;
  LayerStatisticsOptions options_;
  std::map<std::string, Moments> moments_;
  std::map<std::uint64_t, std::vector<std::uint64_t>> routing_;
  std::string all_experts_prefix_;  // set by observe_all_experts_input
  std::vector<CalibrationEntry> entries_;
  std::map<std::string, std::size_t> entry_of_module_;
  std::uint64_t bytes_held_ = 0;
  bool finished_ = false;
};

}  // namespace qs::run
