#pragma once
// The error estimate the tier allocator (bit_allocation.h) weighs tiers by, for one module and
// one tier: the layer objective ‖ΔW·X‖² = tr(ΔW·H·ΔWᵀ) of the tier's encode of a seeded sample
// of the module's rows, scaled to all of them, optionally times the expert's routing frequency.
//
// Which encode: by default the one the job writes — GPTQ-VQ with the rule's settings on the
// prepared Hessian the job uses, then the output-gain correction (vq_gain_correction.h). GPTQ's
// error feedback runs along each row's columns, never across rows, so the sampled rows' codes
// are those the whole matrix's encode gives them; the gain is the sample's. A plain encode
// (nearest codeword per vector, no feedback, no gain correction) is the cheap alternative: it
// overstates the error of the coarse tiers most (1-bit codes gain the most from compensation
// and from the gain correction), which mis-ranks tiers against each other
// (docs/algorithms/vq.md, "Bit allocation").

#include <cstdint>
#include <span>

#include "qs/quant/gptq.h"
#include "qs/quant/vq.h"

namespace qs::vq {

struct AllocationErrorSettings {
  std::uint64_t sample_rows = 256;  // rows encoded (all of them when the matrix has fewer)
  std::uint64_t seed = 0x5eed;      // which rows: deterministic for a seed
  double frequency = 1.0;           // multiplies the result (routing frequency; 1: none)
  // The encode scored. compensate (with a prepared Hessian given): GPTQ-VQ error feedback;
  // without one, or compensate false, the nearest codeword per vector.
  EncodeSettings encode = plain_encode();
  // Rescale the sample's group scales so its output gain is 1, as the job does for learned
  // tiers (needs a prepared Hessian).
  bool correct_gain = false;

  static EncodeSettings plain_encode() {
    EncodeSettings settings;
    settings.compensate = false;
    return settings;
  }
};

// `weight` [rows, cols] f32, `hessian` [cols, cols] f64 (the statistics' XᵀX of the module's
// inputs, full symmetric: what the objective is measured on). `prepared`: the
// gptq::prepare_hessian the job's encode of the module uses (nullptr, or one with a fallback:
// plain encode, no gain correction, as the job does then). Returns frequency ·
// tr(ΔW_S·H·ΔW_Sᵀ) · rows / |S|, ΔW_S the decoded error of the sampled rows. Deterministic at
// any thread count. Throws BadInput "vq.shape" for a Hessian of the wrong size, and what
// vq::encode throws (shape, codebook, non-finite).
double allocation_error(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                        DType scale_dtype, const Codebook& codebook,
                        std::span<const double> hessian, const AllocationErrorSettings& settings,
                        Backend backend = Backend::Cpu,
                        const gptq::PreparedHessian* prepared = nullptr);

// The rows allocation_error samples: `count` distinct indices below `rows`, ascending (all rows
// when count ≥ rows). A fixed generator and mapping, so every platform samples the same rows.
std::vector<std::uint64_t> sample_rows(std::uint64_t rows, std::uint64_t count, std::uint64_t seed);

}  // namespace qs::vq
