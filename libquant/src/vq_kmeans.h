#pragma once
// k-means' seeding on its own, for fit_codebook and for tests that compare a fit with its start.

#include <cstdint>
#include <span>
#include <vector>

namespace qs::vq::detail {

// Weighted k-means++ (Arthur & Vassilvitskii 2007): the first centroid a uniformly drawn point,
// each next one a point drawn with probability ∝ its weighted squared distance D² to the
// nearest centroid so far. [k, d] in f32, not rounded. `parallel`: oneTBB over chunks of points
// (same result).
std::vector<float> kmeans_seed(std::span<const float> points, std::span<const float> weights,
                               std::uint64_t count, std::uint32_t d, std::uint32_t k,
                               std::uint64_t seed, bool parallel);

}  // namespace qs::vq::detail
