#pragma once
// GPTQ on the NVFP4 grid (docs/formats/modelopt-nvfp4.md, "GPTQ on the NVFP4 grid"): the column
// sweep of gptq.h with E2M1 codes under two-level scales instead of integers.
//
//  * s2 (the fused group's global scale) comes from the original weights, as for round-to-
//    nearest, so every member of the group keeps one s2;
//  * each 16-column block's E4M3 scale code is chosen when the sweep enters the block, from the
//    block's error-updated weights, by the given scale method (max, mse, fp8-sweep, or hessian
//    with the block's 16×16 H_b); joint only differs in s2, so here it is fp8-sweep;
//  * codes come straight out of the sweep, and the error fed forward is that of the value a
//    consumer decodes, e2m1(code) · e4m3(scale) · s2 in f32;
//  * act_order moves whole 16-column blocks (PreparedHessian built with order_block = 16):
//    a block's columns are swept together, in their original order, so its scale is decided
//    once and the layout's blocks stay the original contiguous columns.
// Backends: Reference (rows one after another, the codec's E2M1 rounding) and Cpu (oneTBB over
// rows, the branch-free rounding) give the same bytes at any thread count; both run the same
// per-row step (gptq_nvfp4_row.h) and the same fixed-tile lazy SGEMM. Cuda runs the per-row
// step on the device.

#include <cstdint>
#include <span>
#include <string>

#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq.h"

namespace qs::gptq {

inline constexpr std::uint32_t kNvfp4OrderBlock = fp4::kBlockSize;

struct Nvfp4Result {
  // tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ) for the codes written, and for the same scale method without
  // error feedback (what `action: nvfp4` would write with this s2).
  double relative_loss = 0.0;
  double rtn_relative_loss = 0.0;
  bool rtn_computed = false;  // false: the baseline was not asked for (rtn_relative_loss 0)
  fp4::ErrorEnergy energy;  // Σ w² and Σ (w − ŵ)² over the source values
  std::string fallback;     // non-empty: the method's plain quantization was written, and why
};

// `weight`: [rows, cols] f32 (members sharing the Hessian stacked as rows). `blocks`: the
// BlockHessians for ScaleMethod::Hessian (nullptr: fp8-sweep's choice). Writes packed codes
// [rows, cols/2] and scale codes [rows, cols/16] into `out`.
Nvfp4Result quantize_nvfp4(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                           float s2, fp4::ScaleMethod method, const PreparedHessian& hessian,
                           const fp4::BlockHessians* blocks, fp4::Backend backend,
                           fp4::Fp4Buffers out, bool rtn_baseline = true);

namespace detail {
// What the sweep reads, shared by the backends.
struct Nvfp4Sweep {
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
  float s2 = 1.0f;
  fp4::ScaleMethod method = fp4::ScaleMethod::Max;
  const PreparedHessian* hessian = nullptr;
  const fp4::BlockHessians* blocks = nullptr;
};
// Fill `codes` ([rows, cols] E2M1 nibbles, original column order) and `scale_codes`
// ([rows, cols/16]) from `weight` (dead columns already zeroed). `row_objective` ([rows],
// zeroed, optional): each row's Σ e_j², as for the integer sweeps (gptq.h).
void sweep_nvfp4_reference(std::span<const float> weight, const Nvfp4Sweep& sweep,
                           std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                           std::span<double> row_objective = {});
void sweep_nvfp4_cpu(std::span<const float> weight, const Nvfp4Sweep& sweep,
                     std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                     std::span<double> row_objective = {});
void sweep_nvfp4_cuda(std::span<const float> weight, const Nvfp4Sweep& sweep,
                      std::span<std::uint8_t> codes, std::span<std::uint8_t> scale_codes,
                      std::span<double> row_objective = {});
}  // namespace detail

}  // namespace qs::gptq
