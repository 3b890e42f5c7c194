#pragma once
// `quantize` with vq rules: the VQ preparation (codebooks and tiers, qs/quant/vq_preparation.h)
// run before the plan, saved in OUT as job state, and its report. Kept out of quantize.cpp,
// which only calls these.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/quantize_transforms.h"
#include "qs/quant/vq_preparation.h"

namespace qs::cli {

struct VqJobOptions {
  std::filesystem::path output;
  OutputMode mode = OutputMode::Fresh;
  bool dry_run = false;
  bool partitioned = false;         // a --partition worker: prepares alone, saves nothing
  bool calibrating_in_job = false;  // --calib-tokens
  ComputeDevice device = ComputeDevice::Cpu;
  bool zero_non_finite = false;  // --nan-policy zero
  // Everything else the output depends on (recipe text, parameters, statistics file, numerics).
  std::string fingerprint;
};

struct VqJob {
  std::vector<VqCandidate> candidates;
  VqAssignment assignment;
  vq::PreparationReport report;
  bool resumed = false;  // read back from OUT, not prepared by this run
  double seconds = 0.0;  // of this run's preparation (or read-back)
  // OUT, claimed (locked, checked for the mode) before the preparation was saved into it; the
  // executor runs under this claim.
  std::optional<OutputDirectory> claimed;
};

// nullopt when no rule of the recipe is `vq`. Otherwise checks what VQ needs before anything is
// read or written — a statistics file when a rule compensates or allocates
// ("plan.vq_needs_statistics", also for --calib-tokens, which has no statistics at plan time),
// shapes and tiers (vq_candidates) — then reads the preparation back from OUT (--resume) or runs
// it (it reads sampled rows of the experts' weights: also under --dry-run) and, unless a dry
// run or a partition worker, claims OUT and saves it there before returning.
std::optional<VqJob> prepare_vq_job(const Checkpoint& source, const Recipe& recipe,
                                    const CalibrationStore* statistics,
                                    const VqJobOptions& options);

// After the job's last shard: the saved preparation is removed (it is in the output now).
void finish_vq_job(const VqJob& job);

// The tiers per layer, the achieved bits per weight and the preparation's costs; with `times`
// (after the run) also the encode's factorization and sweep seconds.
void print_vq_job(const VqJob& job, const QuantizeStageTimes* times = nullptr);
nlohmann::ordered_json vq_job_json(const VqJob& job, const QuantizeStageTimes* times = nullptr);

}  // namespace qs::cli
