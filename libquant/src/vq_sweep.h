#pragma once
// The GPTQ-VQ sweep's backends (vq_encode.cpp drives them; docs/algorithms/vq.md). Each fills
// the codes and group scales of every row from `w` (the live weight in processing order, updated
// in place) with the same per-row step (vq_sweep_row.h); Reference runs rows one after another,
// Cpu runs them under oneTBB, Cuda runs a thread per row. The lazy update between 128-column
// blocks is the fixed-tile SGEMM of deterministic_blas.h on the host (so Reference and Cpu agree
// bit for bit) and cuBLAS on the GPU.

#include <cstdint>
#include <span>

#include "vq_sweep_row.h"

namespace qs::vq::detail {

// `codes` [rows, cols/d], `scales` [rows, cols/128] (all NaN on entry), `swept` (processing
// order, [rows, cols], or empty), `row_objective` ([rows], zeroed, or empty): each row's Σ e²
// of the scaled errors, as gptq::detail::swept_objective reads it.
struct SweepOutputs {
  std::span<std::uint32_t> codes;
  std::span<float> scales;
  std::span<float> swept;
  std::span<double> row_objective;
};

void sweep_vq_reference(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out);
void sweep_vq_cpu(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out);
// `plan` holds host pointers; the sweep uploads what it reads.
void sweep_vq_cuda(std::span<float> w, const SweepPlan& plan, const SweepOutputs& out);

}  // namespace qs::vq::detail
