// Builds without CUDA: the GPU path of linear() is a usage error the CLI reports.

#include "qs/ckpt/core/error.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {

void cuda_linear(std::span<const float>, std::uint64_t, const Matrix&, std::span<float>) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::run
