// The GPTQ-VQ sweep on the CPU: as the integer sweep (gptq_sweep_cpu.cpp), rows in parallel
// (oneTBB) inside each 128-column block, then one fixed-tile SGEMM for the lazy update. Rows
// never interact and each row runs the reference's per-vector steps (vq_sweep_row.h), so the
// bytes do not depend on the split.
//
// The codeword search is the hot loop (K·(2d + 1) flops per vector, 4096 codewords at 3 bits). It
// runs on the vectorised lane search (vq_search_lanes.h, the reference's first minimum bit for
// bit), and four rows go through the block in lockstep: at each vector position the four rows'
// vectors share one metric and one term table, so one pass over the codebook serves all four.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "../gptq_row_objective.h"
#include "../vq_sweep.h"
#include "qs/quant/deterministic_blas.h"
#include "vq_search_lanes.h"

namespace qs::vq::detail {
namespace {

constexpr std::uint64_t kBatch = cpu::kSearchBatch;

// Sweeps rows [first, first + n) (n ≤ kBatch) through one block, vector by vector.
void sweep_rows(const SweepPlan& plan, const cpu::TransposedCodebook& book, const RowSpan* spans,
                std::uint64_t n) {
  const std::uint32_t d = plan.d;
  float y[kBatch * core::kMaxDimension];
  float scales[kBatch];
  std::uint32_t codes[kBatch];
  core::NearestCode best[kBatch];
  for (int j = 0; j < spans[0].count; j += static_cast<int>(d)) {
    bool any = false;
    for (std::uint64_t b = 0; b < kBatch; ++b) {
      std::fill(y + b * d, y + (b + 1) * d, 0.0f);  // rows with scale 0 (or absent) search zeros
      scales[b] = b < n ? prepare_vector(plan, spans[b], j, y + b * d) : 0.0f;
      any |= scales[b] != 0.0f;
    }
    const std::uint64_t v = (spans[0].i1 + static_cast<std::uint64_t>(j)) / d;
    const float* terms = plan.terms + v * plan.terms_stride;
    if (any && n == kBatch) {
      cpu::search_batch(book, terms, y, best);
    } else {
      for (std::uint64_t b = 0; b < n; ++b)
        if (scales[b] != 0.0f) best[b] = cpu::search(book, terms, y + b * d);
    }
    for (std::uint64_t b = 0; b < n; ++b) {
      codes[b] = scales[b] != 0.0f ? best[b].code() : 0u;
      finish_vector(plan, spans[b], j, scales[b], codes[b]);
    }
  }
}

}  // namespace

void sweep_vq_cpu(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out) {
  const std::uint64_t rows = plan.rows, cols = plan.cols;
  const std::uint64_t vectors = cols / plan.d, groups = cols / kScaleGroup;
  const cpu::TransposedCodebook book(plan.codewords, plan.k, plan.d);
  std::vector<float> errors(rows * gptq::kLazyBlock);
  const std::uint64_t batches = (rows + kBatch - 1) / kBatch;
  for (std::uint64_t i1 = 0; i1 < cols; i1 += gptq::kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + gptq::kLazyBlock, cols);
    const std::uint64_t count = i2 - i1;
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, batches, 1), [&](const auto& range) {
      for (std::uint64_t batch = range.begin(); batch != range.end(); ++batch) {
        const std::uint64_t first = batch * kBatch, n = std::min(kBatch, rows - first);
        RowSpan spans[kBatch];
        for (std::uint64_t b = 0; b < n; ++b) {
          const std::uint64_t r = first + b;
          spans[b] = {w.data() + r * cols,
                      i1,
                      static_cast<int>(count),
                      plan.u ? plan.u + i1 * cols + i1 : nullptr,
                      cols,
                      out.codes.data() + r * vectors,
                      out.scales.data() + r * groups,
                      out.swept.empty() ? nullptr : out.swept.data() + r * cols,
                      errors.data() + r * count};
        }
        sweep_rows(plan, book, spans, n);
        if (plan.u && !out.row_objective.empty())
          for (std::uint64_t b = 0; b < n; ++b)
            out.row_objective[first + b] += gptq::detail::sum_of_squares(spans[b].errors, count);
      }
    });
    if (plan.u && i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, plan.u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::vq::detail
