// Codebook refinement: with the codes fixed, each codeword coordinate becomes the value that
// minimises the weighted squared error of the decoded weights over everything assigned to it,
//   Σ w_col · (t − s·c)²  =  Σ w_col·s² · (t/s − c)²,
// i.e. the mean of the scale-normalised targets t/s weighted by w_col·s². Rounding that mean to
// the codebook's dtype picks the representable value nearest the minimum of a one-dimensional
// quadratic, so the error of the fixed codes never grows (up to the f64 sums' rounding).
// Groups with scale 0 (all-zero groups) constrain nothing and are skipped.

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/quant/int_group.h"
#include "vq_detail.h"

namespace qs::vq {

CodebookRefinement::CodebookRefinement(const Codebook& codebook)
    : codebook_(codebook),
      sums_(codebook.codewords.size(), 0.0),
      totals_(codebook.codewords.size(), 0.0) {
  detail::check_codebook(codebook);
}

void CodebookRefinement::add(std::span<const float> targets, const VqQuantized& quantized,
                             std::span<const float> weights) {
  const std::uint64_t rows = quantized.rows, cols = quantized.cols, d = codebook_.tier.d;
  if (const std::string problem = vq_tier_problem(codebook_.tier, cols); !problem.empty())
    throw_bad_input("vq.shape", problem);
  const std::uint64_t vectors = cols / d, groups = cols / kScaleGroup;
  if (targets.size() != rows * cols || quantized.codes.size() != rows * vectors ||
      quantized.scales.size() != rows * groups || (!weights.empty() && weights.size() != cols))
    throw Error(ErrorClass::Internal, "vq.shape",
                fmt::format("refinement: {} targets, {} codes, {} scales, {} weights for a {}×{} "
                            "matrix of d {}",
                            targets.size(), quantized.codes.size(), quantized.scales.size(),
                            weights.size(), rows, cols, d));
  for (std::uint64_t row = 0; row < rows; ++row) {
    for (std::uint64_t vector = 0; vector < vectors; ++vector) {
      const double scale = quantized.scales[row * groups + vector * d / kScaleGroup];
      if (scale == 0.0) continue;
      const std::uint64_t code = quantized.codes[row * vectors + vector];
      if (code >= codebook_.tier.k)
        throw_bad_input("vq.code_range", fmt::format("code {} at row {}, vector {} is out of "
                                                     "range for tier {} (K = {})",
                                                     code, row, vector, codebook_.tier.name,
                                                     codebook_.tier.k));
      for (std::uint64_t j = 0; j < d; ++j) {
        const std::uint64_t col = vector * d + j;
        const double weight = (weights.empty() ? 1.0 : weights[col]) * scale * scale;
        const double normalised = targets[row * cols + col] / scale;
        sums_[code * d + j] += weight * normalised;
        totals_[code * d + j] += weight;
      }
    }
  }
}

Codebook CodebookRefinement::refined() const {
  Codebook refined = codebook_;
  for (std::uint64_t i = 0; i < refined.codewords.size(); ++i)
    if (totals_[i] > 0.0)
      refined.codewords[i] =
          intq::round_to_dtype(static_cast<float>(sums_[i] / totals_[i]), refined.dtype);
  return refined;
}

}  // namespace qs::vq
