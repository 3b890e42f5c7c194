#pragma once
// Undoing the output shrinkage of low-bit codes (docs/performance/vq-quality.md,
// "Investigation: output shrinkage and the group scale"): GPTQ-VQ codes with the RMS group scale
// reproduce only part of a module's output along the original one — the output gain tr(Ŵ·H·Wᵀ) /
// tr(W·H·Wᵀ) is 0.73–0.78 at 1 bit and 0.98 at 2 bits on the bundled model — and that bias, summed
// over experts and layers, costs more KL divergence than the objective suggests. Multiplying every
// group scale of the module by 1 / gain makes the gain 1 (up to the scale dtype's rounding) and, on
// the bundled model, lowers both the KLD and the objective at every tier. The checkpoint layout is
// unchanged: only the stored scales differ.

#include <cstdint>
#include <span>

#include "qs/quant/gptq.h"
#include "qs/quant/vq.h"

namespace qs::vq {

struct GainCorrection {
  double gain = 1.0;    // tr(Ŵ·H·Wᵀ) / tr(W·H·Wᵀ) of the codes as encoded
  double factor = 1.0;  // what every scale was multiplied by (1: left alone)
};

// Rescales `quantized.scales` (rounded to quantized.scale_dtype) so that the module's output gain
// under `hessian` (gptq::prepare_hessian of its statistics; only its H is read) is 1. Leaves
// the scales alone when tr(W·H·Wᵀ) or tr(Ŵ·H·Wᵀ) is not positive (an all-zero module, codes
// pointing against the weights). Codes are not touched; zero scales stay zero. Deterministic at
// any thread count (the fixed-tile quadratic forms of gptq::detail).
GainCorrection correct_output_gain(std::span<const float> weight, const Codebook& codebook,
                                   const gptq::PreparedHessian& hessian, VqQuantized& quantized);

}  // namespace qs::vq
