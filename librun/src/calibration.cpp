#include "qs/run/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "qs/ckpt/plan/calibration_store.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/run/language_model.h"

namespace qs::run {
namespace {

struct SecondMoments {
  std::uint64_t in_features = 0;
  std::uint64_t tokens = 0;
  double amax = 0.0;         // max |x|
  std::vector<double> sums;  // upper triangle filled by add_gram_upper, mirrored on write
};

// Collects one layer's statistics, then hands them to the store and forgets them, so memory
// holds one layer's matrices.
class Collector final : public LinearObserver {
 public:
  void observe(const std::string& module, std::span<const float> inputs, std::uint64_t rows,
               std::uint64_t cols) override {
    accumulate(moments_[module], inputs, rows, cols);
  }
  void routed(std::uint64_t layer, const std::vector<std::uint64_t>& counts) override {
    routing_[layer] = counts;
  }
  void observe_all_experts_input(const std::string& experts_prefix, std::span<const float> inputs,
                                 std::uint64_t rows, std::uint64_t cols) override {
    shared_prefix_ = experts_prefix;
    accumulate(moments_[experts_prefix + ".gate_up_input"], inputs, rows, cols);
  }

  // Writes what was collected; under all-experts, each expert's gate/up point at the one
  // shared input matrix.
  void flush(CalibrationStoreWriter& writer, std::uint64_t experts, CalibrationSummary& summary) {
    for (auto& [module, moments] : moments_) {
      const std::uint64_t k = moments.in_features;
      for (std::uint64_t i = 0; i < k; ++i)
        for (std::uint64_t j = 0; j < i; ++j) moments.sums[i * k + j] = moments.sums[j * k + i];
      writer.add(module, k, moments.tokens, moments.sums, moments.amax);
      ++summary.stored_matrices;
      ++summary.modules;
    }
    if (!shared_prefix_.empty()) {
      const std::string holder = shared_prefix_ + ".gate_up_input";
      const std::uint64_t tokens = moments_.at(holder).tokens;
      for (std::uint64_t e = 0; e < experts; ++e)
        for (const char* projection : {"gate_proj", "up_proj"}) {
          writer.add_shared(fmt::format("{}.{}.{}", shared_prefix_, e, projection), holder, tokens);
          ++summary.modules;
        }
    }
    for (auto& [layer, counts] : routing_) writer.set_routing(layer, counts);
    moments_.clear();
    routing_.clear();
    shared_prefix_.clear();
  }

 private:
  static void accumulate(SecondMoments& moments, std::span<const float> inputs, std::uint64_t rows,
                         std::uint64_t cols) {
    if (moments.sums.empty()) {
      moments.in_features = cols;
      moments.sums.assign(cols * cols, 0.0);
    }
    std::vector<double> widened(inputs.begin(), inputs.begin() + rows * cols);
    for (double value : widened) moments.amax = std::max(moments.amax, std::fabs(value));
    // Fixed tiles, each one single-threaded BLAS call: the same sums whatever the thread count.
    blas::add_gram_upper(rows, cols, widened.data(), moments.sums.data());
    moments.tokens += rows;
  }

  std::map<std::string, SecondMoments> moments_;
  std::map<std::uint64_t, std::vector<std::uint64_t>> routing_;
  std::string shared_prefix_;
};

}  // namespace

CalibrationSummary calibrate(const Checkpoint& checkpoint, const TokenBatch& tokens,
                             const std::filesystem::path& output,
                             const CalibrationOptions& options) {
  const LanguageModel model(checkpoint, options.device);
  const auto& dims = model.architecture().dimensions;
  CalibrationStoreWriter writer(
      output, {checkpoint.directory().string(), tokens.rows * tokens.seq, options.all_experts,
               fmt::format("f32 activations (GEMMs on {}) widened to f64, summed in f64 in fixed "
                           "BLAS tiles ({})",
                           options.device == GemmDevice::Cuda ? "cuBLAS" : "the CPU",
                           blas::numerics_identity())});
  Collector collector;
  RunOptions run;
  run.observer = &collector;
  run.all_experts = options.all_experts;
  CalibrationSummary summary;
  summary.token_rows = tokens.rows * tokens.seq;
  const bool mtp = options.include_mtp && dims.num_nextn_predict_layers > 0 && tokens.seq > 1;
  const std::uint64_t total = dims.num_hidden_layers + (mtp ? 1 : 0);
  auto hidden = model.embed(tokens.ids, tokens.rows, tokens.seq);
  for (std::uint64_t layer = 0; layer < dims.num_hidden_layers; ++layer) {
    model.run_layer(layer, hidden, run);
    collector.flush(writer, dims.n_routed_experts, summary);
    if (options.on_progress) options.on_progress(layer + 1, total);
  }
  if (mtp) {
    model.final_norm(hidden);
    model.mtp_logits(hidden, tokens.ids, run);
    collector.flush(writer, dims.n_routed_experts, summary);
    if (options.on_progress) options.on_progress(total, total);
  }
  writer.commit();
  return summary;
}

}  // namespace qs::run
