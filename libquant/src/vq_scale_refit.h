#pragma once
// ScaleRule::LeastSquares (qs/quant/vq.h; docs/algorithms/vq.md, "Scales"): the group scales
// refitted after the sweep with the codes fixed. One host implementation serves every backend
// (the CUDA encode runs it on the host after its sweep), so Reference and Cpu agree bit for bit.

#include <cstdint>
#include <span>

#include "qs/quant/gptq.h"
#include "qs/quant/vq.h"

namespace qs::vq::detail {

// `live` [rows, cols]: the source weights (dead columns zeroed); `codewords` [K, d] as stored.
// With `hessian` (its undamped H, the layer objective's), each row's scales jointly minimise
// (w − Σ_g s_g·ĉ_g)ᵀ·H·(w − Σ_g s_g·ĉ_g); without, each group's minimises Σ (w − s·ĉ)².
// Scales that are 0 (all-zero groups) stay 0. Results are rounded to quantized.scale_dtype.
void refit_scales(std::span<const float> live, std::span<const float> codewords, std::uint32_t d,
                  const gptq::PreparedHessian* hessian, VqQuantized& quantized);

}  // namespace qs::vq::detail
