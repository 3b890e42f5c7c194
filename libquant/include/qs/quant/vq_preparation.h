#pragma once
// What a VQ quantize job decides before any expert is encoded (docs/algorithms/
// vq-quantize-job.md): the shared codebooks of every tier in use and each module's tier. Both need
// the whole model at once — a codebook is fitted on sub-vectors of every expert it serves, and
// the allocator trades bits between all experts — so they are fixed here, at plan time, from a
// sample of the source weights and the statistics file, and handed to the planner as a
// VqAssignment (the codebooks become tensors of the output, the tiers its modules' layouts).
//
// The steps, per rule menu:
//   1. For each learned tier and codebook scope (the model, or one MoE layer with
//      `codebooks: layer`): weighted k-means (vq::fit_codebook) on the scale-normalised
//      sub-vectors of a fixed, seeded sample of rows of every candidate whose menu has the tier;
//      the weight of a coordinate is diag(XᵀX) at its input column divided by the module's mean
//      diagonal (the columns the layer objective weighs most). Uniform tiers take
//      vq::uniform_codebook. `refine` rounds then re-fit the centroids on the compensated
//      targets of a GPTQ-VQ encode of the sampled rows (vq::CodebookRefinement).
//   2. For every module of an allocating rule and every tier of its menu, the error estimate
//      (qs/quant/vq_allocation_error.h: the layer objective of the job's encode of the sampled
//      rows — GPTQ-VQ on the prepared Hessian, gain-corrected — or, with allocation_estimate:
//      plain, of a nearest-codeword encode, scaled to the matrix) times the expert's routing
//      frequency (allocation_routing), gate/up errors in the expert's output space
//      (allocation_output_space); gate_proj and up_proj of one expert are one item. alloc::allocate picks the tiers for the
//      rule's target_bpw.
//   3. The assignment: module → tier and codebook tensor, codebook tensor → values.
//
// Only sampled rows are read (a safetensors tensor's rows are contiguous): at most
// `sample_rows` per module, so the stage reads a small fraction of the experts' bytes.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/calibration_statistics.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/quant/vq.h"

namespace qs::vq {

// Per MoE layer, how many calibration tokens the router sent to each expert (the statistics
// file's routing table, CalibrationStore::routing()).
using RoutingTable = std::map<std::uint64_t, std::vector<std::uint64_t>>;

struct PreparationSettings {
  // Rows of each module read for the codebook sample and the error estimates (a seeded choice,
  // the same for every tier, so the estimates compare like with like).
  std::uint64_t sample_rows = 32;
  // Sub-vectors one codebook is fitted on at most (k-means costs points × K × d per round);
  // the rows each module contributes are cut to stay within it.
  std::uint64_t max_codebook_vectors = 1u << 17;
  std::uint64_t seed = 0x5eed;
  KMeansSettings kmeans;
  Backend backend = Backend::Cpu;
  // NaN / ±Inf in a sampled weight row: false refuses ("weight.non_finite", naming the file and
  // tensor), true reads them as 0 — what the quantize transform does under --nan-policy zero.
  bool zero_non_finite = false;
  // One line per step (fitting a codebook, estimating a layer, allocating), for stderr.
  std::function<void(const std::string&)> progress;
};

// What the stage found, for --dry-run and the job's report; kept with the job state, so a
// resumed job prints the same.
struct PreparationReport {
  struct CodebookFit {
    std::string tensor;  // "vq_codebooks.vq2"
    std::string tier;
    std::uint64_t vectors = 0;  // sub-vectors fitted on (0: a uniform codebook)
    std::uint32_t refine_rounds = 0;
    double seconds = 0.0;
  };
  std::vector<CodebookFit> codebooks;
  double estimate_seconds = 0.0;  // the per-tier error estimates of every allocating module
  // Σ over allocating modules of the chosen tier's estimated error (the allocator's objective).
  double estimated_error = 0.0;
};

struct VqPreparation {
  VqAssignment assignment;
  PreparationReport report;
};

// The encoder settings a VQ rule's options ask for (the preparation's refinement encodes and
// the quantize transform both use them).
EncodeSettings encode_settings(const VqOptions& options);

// `candidates` from vq_candidates(source, recipe) (their rules' GPTQ knobs are read from
// `recipe`). Throws BadInput "vq.budget" (a target below the cheapest tier), "vq.non_finite"
// for NaN/Inf weights or statistics, and what reading the source throws.
VqPreparation prepare_vq(const Checkpoint& source, const Recipe& recipe,
                         std::span<const VqCandidate> candidates,
                         const CalibrationStatistics& statistics, const RoutingTable& routing,
                         const PreparationSettings& settings);

// The assignment's tiers per decoder layer (nullopt: modules outside the layers) and its bits:
// what --dry-run and the job print.
struct TierHistogram {
  // layer → tier name → modules
  std::map<std::optional<std::uint32_t>, std::map<std::string, std::uint64_t>> modules;
  std::map<std::string, std::uint64_t> weights_by_tier;
  std::uint64_t weights = 0;  // of every VQ module
  double bits = 0.0;          // their codes and scales (codebooks not counted)
  double bits_per_weight() const { return weights ? bits / static_cast<double>(weights) : 0.0; }
};
TierHistogram tier_histogram(std::span<const VqCandidate> candidates,
                             const VqAssignment& assignment);

}  // namespace qs::vq
