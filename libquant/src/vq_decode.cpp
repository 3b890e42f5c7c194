// VQ decode: ŵ[r, c] = codeword[code(r, c/d)][c mod d] · scale[r, c/128], one f32 product of
// the stored (already rounded) codeword and scale — what every consumer of the checkpoint
// computes (docs/formats/vq.md).

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/quant/vq.h"
#include "vq_detail.h"

namespace qs::vq {

void decode(const VqQuantized& quantized, const Codebook& codebook, std::span<float> out) {
  detail::check_codebook(codebook);
  const std::uint64_t rows = quantized.rows, cols = quantized.cols, d = codebook.tier.d;
  if (const std::string problem = vq_tier_problem(codebook.tier, cols); !problem.empty())
    throw_bad_input("vq.shape", problem);
  const std::uint64_t vectors = cols / d, groups = cols / kScaleGroup;
  if (quantized.codes.size() != rows * vectors || quantized.scales.size() != rows * groups ||
      out.size() != rows * cols)
    throw Error(ErrorClass::Internal, "vq.shape",
                fmt::format("decode: {} codes, {} scales, {} outputs for a {}×{} matrix of d {}",
                            quantized.codes.size(), quantized.scales.size(), out.size(), rows,
                            cols, d));
  for (std::uint64_t row = 0; row < rows; ++row) {
    for (std::uint64_t vector = 0; vector < vectors; ++vector) {
      const std::uint32_t code = quantized.codes[row * vectors + vector];
      if (code >= codebook.tier.k)
        throw_bad_input("vq.code_range",
                        fmt::format("code {} at row {}, vector {} is out of range for tier {} "
                                    "(K = {})",
                                    code, row, vector, codebook.tier.name, codebook.tier.k));
      const float* codeword = codebook.codewords.data() + std::uint64_t{code} * d;
      const float scale = quantized.scales[row * groups + vector * d / kScaleGroup];
      float* target = out.data() + row * cols + vector * d;
      for (std::uint64_t j = 0; j < d; ++j) target[j] = codeword[j] * scale;
    }
  }
}

}  // namespace qs::vq
