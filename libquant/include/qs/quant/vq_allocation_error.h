#pragma once
// The error estimate the tier allocator (bit_allocation.h) weighs tiers by, for one module and
// one tier: the layer objective ‖ΔW·X‖² = tr(ΔW·H·ΔWᵀ) of a cheap encode — nearest codeword per
// vector, no error feedback (vq::encode with compensate = false) — measured on a seeded sample
// of the module's rows and scaled to all of them, optionally times the expert's routing
// frequency. Under all-experts statistics every expert's gate_proj/up_proj share one H (all
// tokens), so without that factor a rarely routed expert would look as important as a busy one.
//
// The plain encode keeps the allocation cheap (no factorization, no sweep) and ranks tiers the
// way the final, compensated encode does (the published GLM release's allocator uses the same
// proxy); its absolute values are higher than the compensated encode's.

#include <cstdint>
#include <span>

#include "qs/quant/vq.h"

namespace qs::vq {

struct AllocationErrorSettings {
  std::uint64_t sample_rows = 256;  // rows encoded (all of them when the matrix has fewer)
  std::uint64_t seed = 0x5eed;      // which rows: deterministic for a seed
  double frequency = 1.0;           // multiplies the result (routing frequency; 1: none)
};

// `weight` [rows, cols] f32, `hessian` [cols, cols] f64 (the statistics' XᵀX of the module's
// inputs, full symmetric). Returns frequency · tr(ΔW_S·H·ΔW_Sᵀ) · rows / |S|, ΔW_S the decoded
// error of the sampled rows. Deterministic at any thread count. Throws BadInput "vq.shape" for
// a Hessian of the wrong size, and what vq::encode throws (shape, codebook, non-finite).
double allocation_error(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                        DType scale_dtype, const Codebook& codebook,
                        std::span<const double> hessian, const AllocationErrorSettings& settings,
                        Backend backend = Backend::Cpu);

// The rows allocation_error samples: `count` distinct indices below `rows`, ascending (all rows
// when count ≥ rows). A fixed generator and mapping, so every platform samples the same rows.
std::vector<std::uint64_t> sample_rows(std::uint64_t rows, std::uint64_t count, std::uint64_t seed);

}  // namespace qs::vq
