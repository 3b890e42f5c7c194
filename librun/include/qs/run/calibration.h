#pragma once
// `quantsmith calibrate`: runs a model over calibration tokens, layer by layer, and stores per
// Linear the input second moments XᵀX and token counts, plus the router's expert counts
// (qs/ckpt/plan/calibration_store.h). XᵀX is accumulated in f64: each layer's input rows are
// widened to f64 and summed with a BLAS dsyrk, so no f32 rounding enters the sums. One layer's
// statistics are held at a time (qs/run/layer_statistics.h).

#include <cstdint>
#include <filesystem>
#include <functional>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/run/evaluation.h"

namespace qs::run {

struct CalibrationOptions {
  bool all_experts = false;  // every token through every expert (statistics only)
  bool include_mtp = true;   // the MTP layer's Linears too
  GemmDevice device = GemmDevice::Cpu;
  StatisticsPrecision precision = StatisticsPrecision::F64;  // of the stored matrices
  std::function<void(std::uint64_t done, std::uint64_t total)> on_progress;
};

struct CalibrationSummary {
  std::uint64_t modules = 0;  // entries written (shared ones included)
  std::uint64_t stored_matrices = 0;
  std::uint64_t token_rows = 0;
  std::uint64_t peak_statistics_bytes = 0;  // the largest layer's matrices, held at once
};

CalibrationSummary calibrate(const Checkpoint& checkpoint, const TokenBatch& tokens,
                             const std::filesystem::path& output,
                             const CalibrationOptions& options);

}  // namespace qs::run
