#pragma once
// The pieces behind qs/quant/vq.h that each backend implements (src/ref, src/cpu, src/cuda),
// and the checks every entry point shares.

#include <cstdint>
#include <span>
#include <vector>

#include "qs/quant/vq.h"

namespace qs::vq::detail {

// BadInput "vq.codebook" unless the tier is usable and the codebook holds K·d values.
void check_codebook(const Codebook& codebook);

// term(c) of every codeword (vq_search_core.h) for `metric` ([d, d], empty: Euclidean).
std::vector<float> codeword_terms(const Codebook& codebook, std::span<const float> metric);

// nearest_codewords, sizes already checked; `terms` from codeword_terms.
void nearest_codewords_reference(std::span<const float> vectors, std::uint64_t count,
                                 const Codebook& codebook, std::span<const float> metric,
                                 std::span<const float> terms, std::span<std::uint32_t> codes);
void nearest_codewords_cpu(std::span<const float> vectors, std::uint64_t count,
                           const Codebook& codebook, std::span<const float> metric,
                           std::span<const float> terms, std::span<std::uint32_t> codes);
void nearest_codewords_cuda(std::span<const float> vectors, std::uint64_t count,
                            const Codebook& codebook, std::span<const float> metric,
                            std::span<const float> terms, std::span<std::uint32_t> codes);

// k-means' assignment step: for each point the codeword of least weighted distance
// Σ_j w_j·(x_j − c_j)² (vq_search_core.h weighted_distance; `weights` [count, d], empty: all 1),
// ties to the lowest index; `distances` (when not empty) receives each point's distance.
// `codewords` [k, d] in f32 (not yet rounded: k-means works between roundings).
struct Centroids {
  std::uint32_t d = 0;
  std::uint32_t k = 0;
  std::span<const float> values;  // [k, d]
};
void assign_weighted_reference(std::span<const float> points, std::span<const float> weights,
                               std::uint64_t count, const Centroids& centroids,
                               std::span<std::uint32_t> codes, std::span<float> distances);
void assign_weighted_cpu(std::span<const float> points, std::span<const float> weights,
                         std::uint64_t count, const Centroids& centroids,
                         std::span<std::uint32_t> codes, std::span<float> distances);
void assign_weighted_cuda(std::span<const float> points, std::span<const float> weights,
                          std::uint64_t count, const Centroids& centroids,
                          std::span<std::uint32_t> codes, std::span<float> distances);

}  // namespace qs::vq::detail
