#pragma once
// One row's part of a lazy block of the GPTQ-VQ sweep (docs/algorithms/vq.md, "GPTQ with a
// vector quantizer"), shared by the reference, CPU and CUDA sweeps: QS_HOST_DEVICE, f32 in one
// fixed order, no FMA contraction (host code builds with -ffp-contract=off; the device code uses
// vq_search_core.h's _rn arithmetic and the .cu file builds with -fmad=false), so every backend
// writes the same codes, scales and errors.

#include <cmath>
#include <cstdint>

#include "qs/ckpt/core/host_device.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq.h"
#include "vq_search_core.h"

namespace qs::vq::detail {

// What every backend's sweep reads; the pointers are host or device memory as the backend needs.
struct SweepPlan {
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
  std::uint32_t d = 1;
  std::uint32_t k = 2;
  DType scale_dtype = DType::BF16;
  const float* codewords = nullptr;         // [K, d], rounded to the codebook dtype
  const std::uint32_t* order = nullptr;     // processing position → original column
  const std::uint32_t* position = nullptr;  // original column → processing position
  // U (upper, processing order, [cols, cols]); nullptr: no error feedback (nearest codeword).
  const float* u = nullptr;
  ErrorUpdate update = ErrorUpdate::Exact;
  // Per processing vector position v (columns v·d ..): M_v [d, d] (nullptr: Euclidean) and the
  // codeword terms cᵀM_v c [K] at terms + v·terms_stride (stride 0: one table for all), each
  // table padded with +∞ to `terms_padded` entries (whole lane groups for the CPU search).
  const float* metrics = nullptr;
  const float* terms = nullptr;
  std::uint64_t terms_stride = 0;
  std::uint32_t terms_padded = 0;
};

// The rounded RMS of the original columns [first, first + 128) of a row, read where the sweep
// holds them now (`row` in processing order, `position` maps columns to it). Summed in f64 in
// column order: the same on every backend, and no overflow for any finite f32 input.
QS_HOST_DEVICE inline float group_scale(const float* row, const std::uint32_t* position,
                                        std::uint64_t first, DType scale_dtype) {
  double sum = 0.0;
  for (std::uint64_t c = first; c < first + kScaleGroup; ++c) {
    const double value = row[position[c]];
    sum += value * value;
  }
  return intq::round_to_dtype(static_cast<float>(sqrt(sum / static_cast<double>(kScaleGroup))),
                              scale_dtype);
}

// One row's state while the sweep crosses a 128-column block: `row` is the whole row in
// processing order (updated in place), `u_block` the factor at (i1, i1) with row stride
// `u_stride` (unused without feedback). `codes` ([cols/d], vectors in original order) and
// `scales` ([cols/128], NaN until the sweep first enters the group) are the row's; `swept`
// (processing order, may be null) receives each vector's values as they were quantized;
// `errors` ([count]) the scaled errors fed forward.
struct RowSpan {
  float* row;
  std::uint64_t i1;
  int count;
  const float* u_block;
  std::uint64_t u_stride;
  std::uint32_t* codes;
  float* scales;
  float* swept;
  float* errors;
};

// The first half of one vector's step, at block offset j: fixes the group's scale when the sweep
// enters the group, records the swept values, and projects the scale-normalised vector into `y`
// (y = M·x). Returns the scale; a zero scale decodes to 0 whatever the code, so the vector then
// needs no search and keeps code 0.
QS_HOST_DEVICE inline float prepare_vector(const SweepPlan& plan, const RowSpan& span, int j,
                                           float* y) {
  const std::uint64_t at = span.i1 + static_cast<std::uint64_t>(j);
  const std::uint64_t group = plan.order[at] / kScaleGroup;
  float scale = span.scales[group];
  if (scale != scale) {  // NaN: the sweep enters the group; its scale is fixed from here on
    scale = group_scale(span.row, plan.position, group * kScaleGroup, plan.scale_dtype);
    span.scales[group] = scale;
  }
  const float* values = span.row + at;
  if (span.swept)
    for (std::uint32_t p = 0; p < plan.d; ++p) span.swept[at + p] = values[p];
  if (scale == 0.0f) return scale;
  float x[core::kMaxDimension];
  for (std::uint32_t p = 0; p < plan.d; ++p) x[p] = values[p] / scale;
  const std::uint64_t v = at / plan.d;
  const float* metric = plan.metrics ? plan.metrics + v * plan.d * plan.d : nullptr;
  core::project(metric, x, plan.d, y);
  return scale;
}

// The second half: stores the code and feeds the decoded vector's error forward inside the block.
QS_HOST_DEVICE inline void finish_vector(const SweepPlan& plan, const RowSpan& span, int j,
                                         float scale, std::uint32_t code) {
  const int d = static_cast<int>(plan.d);
  const std::uint64_t at = span.i1 + static_cast<std::uint64_t>(j);
  span.codes[plan.order[at] / plan.d] = code;
  if (!plan.u) return;
  const float* codeword = plan.codewords + static_cast<std::uint64_t>(code) * plan.d;
  float* row = span.row + span.i1;  // the block's columns
  const int count = span.count;
  if (plan.update == ErrorUpdate::Exact) {
    // e = (w_P − q)·U_PP⁻¹ by forward substitution, each column's share fed at once into the
    // rest of the block (the vector's own later columns included): exactly GPTQ's scalar loop
    // over the vector with the codeword fixed beforehand.
    for (int p = 0; p < d; ++p) {
      const float* u_row = span.u_block + static_cast<std::uint64_t>(j + p) * span.u_stride;
      const float q = core::multiply(codeword[p], scale);
      const float error = core::subtract(row[j + p], q) / u_row[j + p];
      for (int t = j + p + 1; t < count; ++t)
        row[t] = core::subtract(row[t], core::multiply(error, u_row[t]));
      span.errors[j + p] = error;
    }
  } else {
    // GPTVQ: each column's error divided by its own diagonal, the vector's columns left as
    // they were; the columns after the vector get all d shares.
    for (int p = 0; p < d; ++p) {
      const float* u_row = span.u_block + static_cast<std::uint64_t>(j + p) * span.u_stride;
      const float q = core::multiply(codeword[p], scale);
      span.errors[j + p] = core::subtract(row[j + p], q) / u_row[j + p];
    }
    for (int p = 0; p < d; ++p) {
      const float* u_row = span.u_block + static_cast<std::uint64_t>(j + p) * span.u_stride;
      for (int t = j + d; t < count; ++t)
        row[t] = core::subtract(row[t], core::multiply(span.errors[j + p], u_row[t]));
    }
  }
}

// Sweeps the block's vectors of one row, searching each with the shared core in index order.
QS_HOST_DEVICE inline void sweep_vq_row_span(const SweepPlan& plan, const RowSpan& span) {
  float y[core::kMaxDimension];
  for (int j = 0; j < span.count; j += static_cast<int>(plan.d)) {
    const float scale = prepare_vector(plan, span, j, y);
    std::uint32_t code = 0;
    if (scale != 0.0f) {
      const std::uint64_t v = (span.i1 + static_cast<std::uint64_t>(j)) / plan.d;
      core::NearestCode best;
      core::search_run(plan.codewords, plan.terms + v * plan.terms_stride, 0, plan.k, y, plan.d,
                       best);
      code = best.code();
    }
    finish_vector(plan, span, j, scale, code);
  }
}

}  // namespace qs::vq::detail
