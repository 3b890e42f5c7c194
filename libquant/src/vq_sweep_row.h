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
  // codeword terms cᵀM_v c [K] at terms + v·terms_stride (stride 0: one table for all).
  const float* metrics = nullptr;
  const float* terms = nullptr;
  std::uint64_t terms_stride = 0;
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

// The search as the reference runs it: every codeword in index order through the shared core.
struct CoreSearch {
  QS_HOST_DEVICE std::uint32_t operator()(const SweepPlan& plan, std::uint64_t vector,
                                          const float* y) const {
    core::NearestCode best;
    core::search_run(plan.codewords, plan.terms + vector * plan.terms_stride, 0, plan.k, y, plan.d,
                     best);
    return best.code();
  }
};

// Sweeps `count` processing positions [i1, i1 + count) of one row (count a multiple of d).
// `row` is the whole row in processing order (updated in place), `u_block` the factor at
// (i1, i1) with row stride `u_stride` (unused without feedback). `codes` ([cols/d], vectors in
// original order) and `scales` ([cols/128], NaN until the sweep first enters the group) are
// the row's; `swept` (processing order, may be null) receives each vector's values as they were
// quantized; `errors` ([count]) the scaled errors fed forward. `search(plan, v, y)` returns the
// codeword of least cost for the projected vector y at vector position v (CoreSearch, or a
// vectorised search with the same arithmetic and tie rule).
template <typename Search>
QS_HOST_DEVICE inline void sweep_vq_row_span(const SweepPlan& plan, float* row, std::uint64_t i1,
                                             int count, const float* u_block,
                                             std::uint64_t u_stride, std::uint32_t* codes,
                                             float* scales, float* swept, float* errors,
                                             const Search& search) {
  const int d = static_cast<int>(plan.d);
  float x[core::kMaxDimension];
  float y[core::kMaxDimension];
  float q[core::kMaxDimension];
  for (int j = 0; j < count; j += d) {
    const std::uint64_t at = i1 + static_cast<std::uint64_t>(j);
    const std::uint32_t first_column = plan.order[at];
    const std::uint64_t group = first_column / kScaleGroup;
    float scale = scales[group];
    if (scale != scale) {  // NaN: the sweep enters the group; its scale is fixed from here on
      scale = group_scale(row, plan.position, group * kScaleGroup, plan.scale_dtype);
      scales[group] = scale;
    }
    float* values = row + at;
    if (swept)
      for (int p = 0; p < d; ++p) swept[at + p] = values[p];
    std::uint32_t code = 0;
    if (scale != 0.0f) {  // a zero scale decodes to 0 whatever the code: keep code 0
      for (int p = 0; p < d; ++p) x[p] = values[p] / scale;
      const std::uint64_t v = at / plan.d;
      const float* metric = plan.metrics ? plan.metrics + v * plan.d * plan.d : nullptr;
      core::project(metric, x, plan.d, y);
      code = search(plan, v, y);
    }
    codes[first_column / plan.d] = code;
    const float* codeword = plan.codewords + static_cast<std::uint64_t>(code) * plan.d;
    for (int p = 0; p < d; ++p) q[p] = core::multiply(codeword[p], scale);
    if (!plan.u) continue;
    if (plan.update == ErrorUpdate::Exact) {
      // e = (w_P − q)·U_PP⁻¹ by forward substitution, each column's share fed at once into the
      // rest of the block (the vector's own later columns included): exactly GPTQ's scalar loop
      // over the vector with the codeword fixed beforehand.
      for (int p = 0; p < d; ++p) {
        const float* u_row = u_block + static_cast<std::uint64_t>(j + p) * u_stride;
        const float error = core::subtract(values[p], q[p]) / u_row[j + p];
        for (int t = j + p + 1; t < count; ++t)
          row[i1 + t] = core::subtract(row[i1 + t], core::multiply(error, u_row[t]));
        errors[j + p] = error;
      }
    } else {
      // GPTVQ: each column's error divided by its own diagonal, the vector's columns left as
      // they were; the columns after the vector get all d shares.
      for (int p = 0; p < d; ++p) {
        const float* u_row = u_block + static_cast<std::uint64_t>(j + p) * u_stride;
        errors[j + p] = core::subtract(values[p], q[p]) / u_row[j + p];
      }
      for (int p = 0; p < d; ++p) {
        const float* u_row = u_block + static_cast<std::uint64_t>(j + p) * u_stride;
        for (int t = j + d; t < count; ++t)
          row[i1 + t] = core::subtract(row[i1 + t], core::multiply(errors[j + p], u_row[t]));
      }
    }
  }
}

}  // namespace qs::vq::detail
