// Builds without CUDA: asking for the CUDA backend of the VQ searches is a usage error the
// caller can report.

#include "qs/ckpt/core/error.h"
#include "../vq_detail.h"

namespace qs::vq::detail {

void nearest_codewords_cuda(std::span<const float>, std::uint64_t, const Codebook&,
                            std::span<const float>, std::span<const float>,
                            std::span<std::uint32_t>) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

void assign_weighted_cuda(std::span<const float>, std::span<const float>, std::uint64_t,
                          const Centroids&, std::span<std::uint32_t>, std::span<float>) {
  throw_bad_input("cuda.unavailable", "this build of quantsmith has no CUDA support");
}

}  // namespace qs::vq::detail
