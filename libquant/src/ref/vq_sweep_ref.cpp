// The GPTQ-VQ sweep's reference: rows one after another inside each 128-column block. The lazy
// update is the same fixed-tile SGEMM the CPU sweep uses (deterministic_blas.h), so the two agree
// bit for bit; what the reference pins down is the per-vector logic of vq_sweep_row.h.

#include <algorithm>
#include <vector>

#include "../gptq_row_objective.h"
#include "../vq_sweep.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::vq::detail {

void sweep_vq_reference(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out) {
  const std::uint64_t rows = plan.rows, cols = plan.cols;
  const std::uint64_t vectors = cols / plan.d, groups = cols / kScaleGroup;
  std::vector<float> errors(rows * gptq::kLazyBlock);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += gptq::kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + gptq::kLazyBlock, cols);
    const std::uint64_t count = i2 - i1;
    for (std::uint64_t r = 0; r < rows; ++r) {
      float* row_errors = errors.data() + r * count;
      sweep_vq_row_span(
          plan, {w.data() + r * cols, i1, static_cast<int>(count),
                 plan.u ? plan.u + i1 * cols + i1 : nullptr, cols, out.codes.data() + r * vectors,
                 out.scales.data() + r * groups,
                 out.swept.empty() ? nullptr : out.swept.data() + r * cols, row_errors});
      if (plan.u && !out.row_objective.empty())
        out.row_objective[r] += gptq::detail::sum_of_squares(row_errors, count);
    }
    if (plan.u && i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, plan.u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::vq::detail
