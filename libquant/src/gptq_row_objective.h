#pragma once
// One row's share of the swept objective (gptq.h, swept_objective): Σ e_j² over a block's
// scaled errors, in f64 and in column order, so the CPU, reference and CUDA sweeps add the same
// terms in the same order whatever the thread split.

#include <cstdint>

#include "qs/ckpt/core/host_device.h"

namespace qs::gptq::detail {

template <typename Count>
QS_HOST_DEVICE inline double sum_of_squares(const float* errors, Count count) {
  double sum = 0.0;
  for (Count j = 0; j < count; ++j) sum += static_cast<double>(errors[j]) * errors[j];
  return sum;
}

}  // namespace qs::gptq::detail
