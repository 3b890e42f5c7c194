#include "qs/run/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "qs/ckpt/plan/calibration_store.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/run/language_model.h"
#include "qs/run/layer_statistics.h"

namespace qs::run {

CalibrationSummary calibrate(const Checkpoint& checkpoint, const TokenBatch& tokens,
                             const std::filesystem::path& output,
                             const CalibrationOptions& options) {
  const LanguageModel model(checkpoint, options.device);
  const auto& dims = model.architecture().dimensions;
  CalibrationInfo info{checkpoint.directory().string(), tokens.rows * tokens.seq,
                       options.all_experts,
                       fmt::format("f32 activations (GEMMs on {}) widened to f64, summed in f64 in "
                                   "fixed BLAS tiles ({})",
                                   options.device == GemmDevice::Cuda ? "cuBLAS" : "the CPU",
                                   blas::numerics_identity())};
  info.precision = options.precision;
  CalibrationStoreWriter writer(output, info);
  CalibrationSummary summary;
  summary.token_rows = tokens.rows * tokens.seq;
  const LayerStatisticsOptions statistics{dims.n_routed_experts, !options.all_experts};
  RunOptions run;
  run.all_experts = options.all_experts;
  // One layer's statistics at a time: collected while the layer runs, written, freed.
  auto collect = [&](std::uint64_t layer, const std::function<void()>& forward) {
    LayerStatistics collected(layer, statistics);
    run.observer = &collected;
    forward();
    collected.finish();
    summary.modules += collected.entries().size();
    summary.stored_matrices += collected.stored_matrices();
    summary.peak_statistics_bytes =
        std::max(summary.peak_statistics_bytes, collected.bytes_held());
    collected.flush(writer);
    run.observer = nullptr;
  };
  const bool mtp = options.include_mtp && dims.num_nextn_predict_layers > 0 && tokens.seq > 1;
  const std::uint64_t total = dims.num_hidden_layers + (mtp ? 1 : 0);
  auto hidden = model.embed(tokens.ids, tokens.rows, tokens.seq);
  for (std::uint64_t layer = 0; layer < dims.num_hidden_layers; ++layer) {
    collect(layer, [&] { model.run_layer(layer, hidden, run); });
    if (options.on_progress) options.on_progress(layer + 1, total);
  }
  if (mtp) {
    model.final_norm(hidden);
    collect(dims.num_hidden_layers, [&] { model.mtp_logits(hidden, tokens.ids, run); });
    if (options.on_progress) options.on_progress(total, total);
  }
  writer.commit();
  return summary;
}

}  // namespace qs::run
