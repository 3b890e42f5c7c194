// The NVFP4 GPTQ sweep on the CPU: as the integer sweep (gptq_sweep_cpu.cpp), rows in parallel
// inside each 128-column block with the branch-free E2M1 rounding, then one fixed-tile SGEMM
// for the lazy update. Rows never interact, so the bytes do not depend on the split.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "../gptq_nvfp4_row.h"
#include "../gptq_row_objective.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/gptq_nvfp4.h"

namespace qs::gptq::detail {

void sweep_nvfp4_cpu(std::span<const float> weight, const Nvfp4Sweep& sweep,
                     std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                     std::span<double> row_objective) {
  const std::uint64_t rows = sweep.rows, cols = sweep.cols;
  const auto& order = sweep.hessian->order;
  const float* u = sweep.hessian->u.data();
  const float* hessians = sweep.blocks ? sweep.blocks->blocks.data() : nullptr;
  std::vector<float> w(rows * cols);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 16), [&](const auto& range) {
    for (std::uint64_t r = range.begin(); r != range.end(); ++r)
      for (std::uint64_t j = 0; j < cols; ++j) w[r * cols + j] = weight[r * cols + order[j]];
  });
  std::vector<float> errors(rows * kLazyBlock);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + kLazyBlock, cols);
    const std::uint64_t count = i2 - i1;
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 8), [&](const auto& range) {
      for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
        sweep_nvfp4_row_span<fp4::ThresholdE2M1>(
            w.data() + r * cols + i1, static_cast<int>(count), u + i1 * cols + i1, cols,
            order.data() + i1, sweep.s2, sweep.method, hessians, codes.data() + r * cols,
            scale_codes.data() + r * (cols / fp4::kBlockSize), errors.data() + r * count);
        if (!row_objective.empty())
          row_objective[r] += sum_of_squares(errors.data() + r * count, count);
      }
    });
    if (i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::gptq::detail
