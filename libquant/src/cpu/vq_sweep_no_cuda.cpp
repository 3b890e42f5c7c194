// Builds without CUDA: asking for the CUDA VQ sweep is a usage error the caller can report.

#include "../vq_sweep.h"
#include "qs/ckpt/core/error.h"

namespace qs::vq::detail {

void sweep_vq_cuda(std::span<float>, const SweepPlan&, const SweepOutputs&) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::vq::detail
