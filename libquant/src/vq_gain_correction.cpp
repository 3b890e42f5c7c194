#include "qs/quant/vq_gain_correction.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/quant/int_group.h"

namespace qs::vq {

GainCorrection correct_output_gain(std::span<const float> weight, const Codebook& codebook,
                                   const gptq::PreparedHessian& hessian, VqQuantized& quantized) {
  const std::uint64_t rows = quantized.rows, cols = quantized.cols;
  if (weight.size() != rows * cols || hessian.hessian.size() != cols * cols)
    throw_bad_input("vq.shape",
                    fmt::format("gain correction: {} weights and a Hessian of {} values for a "
                                "{} × {} encoding",
                                weight.size(), hessian.hessian.size(), rows, cols));
  std::vector<float> decoded(rows * cols);
  decode(quantized, codebook, decoded);
  const auto objective = gptq::detail::objective_of_decoded(weight, decoded, rows, cols, hessian);
  const double energy = gptq::detail::quadratic_form(decoded, rows, cols, hessian);
  // tr(Ŵ·H·Wᵀ) from the three quadratic forms: ‖ΔW‖² = ‖W‖² + ‖Ŵ‖² − 2⟨Ŵ, W⟩ in H's metric.
  const double cross = (objective.reference + energy - objective.error) / 2.0;
  GainCorrection correction;
  if (objective.reference <= 0.0 || cross <= 0.0) return correction;
  correction.gain = cross / objective.reference;
  correction.factor = objective.reference / cross;
  const auto factor = static_cast<float>(correction.factor);
  for (float& scale : quantized.scales)
    scale = intq::round_to_dtype(scale * factor, quantized.scale_dtype);
  return correction;
}

}  // namespace qs::vq
