#pragma once
// One row's part of a lazy block of the NVFP4 GPTQ sweep (gptq_nvfp4.h), shared by the
// reference, CPU and CUDA sweeps: QS_HOST_DEVICE, f32 in a fixed order, no FMA contraction
// (the host builds with -ffp-contract=off, the CUDA files with -fmad=false).

#include <cstdint>

#include "qs/ckpt/core/host_device.h"
#include "qs/quant/fp4_block.h"

namespace qs::gptq::detail {

// Sweeps `count` columns of one row (processing order) from a position that is a multiple of
// 16: `row` and `order` (processing → original column) point at that position, `u` at the
// factor's element there (row stride `u_stride`). Entering a block, its scale code is chosen
// from the updated values; each column's scaled error (w − ŵ)/U_jj goes to `errors[j]` and into
// the later columns of the span. `hessians`: 16×16 per original block (or nullptr). `codes`
// ([cols], original order) and `scale_codes` ([cols/16]) are the row's.
template <typename E2M1>
QS_HOST_DEVICE inline void sweep_nvfp4_row_span(float* row, int count, const float* u,
                                                std::uint64_t u_stride,
                                                const std::uint32_t* order, float s2,
                                                fp4::ScaleMethod method, const float* hessians,
                                                std::uint8_t* codes, std::uint8_t* scale_codes,
                                                float* errors) {
  float divisor = 1.0f;
  for (int j = 0; j < count; ++j) {
    if (j % fp4::kBlockSize == 0) {
      const std::uint64_t block = order[j] / fp4::kBlockSize;
      const float* hessian =
          hessians ? hessians + block * fp4::kBlockSize * fp4::kBlockSize : nullptr;
      const std::uint8_t scale_code = fp4::choose_scale_code<E2M1>(row + j, s2, method, hessian);
      scale_codes[block] = scale_code;
      divisor = fp4::scale_divisor(scale_code, s2);
    }
    const std::uint8_t code = E2M1::encode(row[j] / divisor);
    codes[order[j]] = code;
    const float* u_row = u + static_cast<std::uint64_t>(j) * u_stride;
    const float error = (row[j] - E2M1::decode_scaled(code, divisor)) / u_row[j];
    for (int t = j + 1; t < count; ++t) row[t] -= error * u_row[t];
    errors[j] = error;
  }
}

}  // namespace qs::gptq::detail
