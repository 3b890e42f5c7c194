// The GPTQ-VQ sweep on the CPU: as the integer sweep (gptq_sweep_cpu.cpp), rows in parallel
// (oneTBB) inside each 128-column block, then one fixed-tile SGEMM for the lazy update. Rows
// never interact and each row runs the reference's step, so the bytes do not depend on the split.
//
// The codeword search is the hot loop (K·(2d + 1) flops per vector, 4096 codewords at 3 bits):
// here it runs eight codewords at a time in vector registers on a transposed copy of the codebook
// (coordinate j of every codeword contiguous). Each lane computes one codeword's cost with the
// operations of vq_search_core.h in the same order (no FMA contraction on the host), each lane
// keeps its first minimum, and the lanes are merged by (cost, index): the reference's in-order
// strict-less-than minimum, so the codes are the reference's bit for bit.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../gptq_row_objective.h"
#include "../vq_sweep.h"
#include "qs/quant/deterministic_blas.h"

namespace qs::vq::detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VQ_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VQ_VECTOR_CLONES
#endif

// The lane vectors never cross a call boundary (all helpers are inlined into the cloned search).
#pragma GCC diagnostic ignored "-Wpsabi"

constexpr std::uint32_t kLanes = 8;
using Floats = float __attribute__((vector_size(kLanes * sizeof(float))));
using Ints = std::int32_t __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

[[gnu::always_inline]] inline Floats load(const float* values) {
  Floats vector;
  std::memcpy(&vector, values, sizeof vector);
  return vector;
}

// The codebook's first `whole` codewords (a multiple of the lane count) as columns: coordinate j
// of codeword k at [j·whole + k]. The rest (K < 8, or K not a multiple of 8) go through the core.
struct TransposedCodebook {
  std::uint32_t whole = 0;
  std::vector<float> coordinates;

  explicit TransposedCodebook(const SweepPlan& plan)
      : whole(plan.k / kLanes * kLanes), coordinates(std::uint64_t{whole} * plan.d) {
    for (std::uint32_t k = 0; k < whole; ++k)
      for (std::uint32_t j = 0; j < plan.d; ++j)
        coordinates[std::uint64_t{j} * whole + k] = plan.codewords[std::uint64_t{k} * plan.d + j];
  }
};

// cost = term − 2·dot(c, y), dot in coordinate order (vq_search_core.h codeword_cost).
QS_VQ_VECTOR_CLONES std::uint32_t lane_search(const TransposedCodebook& book, const SweepPlan& plan,
                                              const float* terms, const float* y) {
  const std::uint32_t d = plan.d;
  Floats best_cost = Floats{} + std::numeric_limits<float>::infinity();
  Ints best_index = Ints{} - 1;
  Ints index;
  for (std::uint32_t lane = 0; lane < kLanes; ++lane) index[lane] = static_cast<std::int32_t>(lane);
  for (std::uint32_t k = 0; k < book.whole; k += kLanes) {
    Floats dot = load(book.coordinates.data() + k) * y[0];
    for (std::uint32_t j = 1; j < d; ++j)
      dot = dot + load(book.coordinates.data() + std::uint64_t{j} * book.whole + k) * y[j];
    const Floats cost = load(terms + k) - 2.0f * dot;
    const Ints better = cost < best_cost;
    best_cost = better ? cost : best_cost;
    best_index = better ? index : best_index;
    index += static_cast<std::int32_t>(kLanes);
  }
  core::NearestCode best;
  for (std::uint32_t lane = 0; lane < kLanes; ++lane)
    if (best_index[lane] >= 0)
      best.merge({best_cost[lane], static_cast<std::uint32_t>(best_index[lane])});
  // The codewords past the last whole lane group come after every lane's: offered in order.
  core::search_run(plan.codewords, terms, book.whole, plan.k, y, d, best);
  return best.code();
}

struct LaneSearch {
  const TransposedCodebook* book;
  std::uint32_t operator()(const SweepPlan& plan, std::uint64_t vector, const float* y) const {
    // Fewer than eight codewords (the scalar tiers): the in-order core, without a call.
    if (book->whole == 0) return CoreSearch{}(plan, vector, y);
    return lane_search(*book, plan, plan.terms + vector * plan.terms_stride, y);
  }
};

}  // namespace

void sweep_vq_cpu(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out) {
  const std::uint64_t rows = plan.rows, cols = plan.cols;
  const std::uint64_t vectors = cols / plan.d, groups = cols / kScaleGroup;
  const TransposedCodebook book(plan);
  const LaneSearch search{&book};
  std::vector<float> errors(rows * gptq::kLazyBlock);
  for (std::uint64_t i1 = 0; i1 < cols; i1 += gptq::kLazyBlock) {
    const std::uint64_t i2 = std::min<std::uint64_t>(i1 + gptq::kLazyBlock, cols);
    const std::uint64_t count = i2 - i1;
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 4), [&](const auto& range) {
      for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
        float* row_errors = errors.data() + r * count;
        sweep_vq_row_span(plan, w.data() + r * cols, i1, static_cast<int>(count),
                          plan.u ? plan.u + i1 * cols + i1 : nullptr, cols,
                          out.codes.data() + r * vectors, out.scales.data() + r * groups,
                          out.swept.empty() ? nullptr : out.swept.data() + r * cols, row_errors,
                          search);
        if (plan.u && !out.row_objective.empty())
          out.row_objective[r] += gptq::detail::sum_of_squares(row_errors, count);
      }
    });
    if (plan.u && i2 < cols)
      blas::sgemm(blas::Op::None, blas::Op::None, rows, cols - i2, count, -1.0f, errors.data(),
                  count, plan.u + i1 * cols + i2, cols, 1.0f, w.data() + i2, cols);
  }
}

}  // namespace qs::vq::detail
