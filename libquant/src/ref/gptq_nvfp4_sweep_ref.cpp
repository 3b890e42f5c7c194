// The NVFP4 GPTQ sweep's reference: rows one after another with the codec's E2M1 rounding.
// The lazy update is the same fixed-tile SGEMM the CPU sweep uses (deterministic_blas.h), so
// the two agree bit for bit; what the reference pins down is the per-column logic.

#include <algorithm>
#include <vector>

#include "../gptq_nvfp4_row.h"
#include "../gptq_row_objective.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/gptq_nvfp4.h"

namespace qs::gptq::detail {

void sweep_nvfp4_reference(std::span<const float> weight, const Nvfp4Sweep& sweep,
                           std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                           std::span<double> row_objective) {
  const std::uint64_t rows = sweep.rows, cols = sweep.cols;
  const auto& order = sweep.hessian->order;
  const float* u = sweep.hessian->u.data();
  const float* hessians = sweep.blocks ? sweep.blocks->blocks.data() : nullptr;
  std::vector<float> w(rows * cols);
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t j = 0; j < cols; ++j) w[r * cols + j] = weight[r * cols + order[j]];
  std::vector<float> errors(rows * kLazyBlock);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + kLazyBlock, cols);
    const std::uint64_t count = i2 - i1;
    for (std::uint64_t r = 0; r < rows; ++r) {
      sweep_nvfp4_row_span<fp4::CodecE2M1>(
          w.data() + r * cols + i1, static_cast<int>(count), u + i1 * cols + i1, cols,
          order.data() + i1, sweep.s2, sweep.method, hessians, codes.data() + r * cols,
          scale_codes.data() + r * (cols / fp4::kBlockSize), errors.data() + r * count);
      if (!row_objective.empty())
        row_objective[r] += sum_of_squares(errors.data() + r * count, count);
    }
    if (i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::gptq::detail
