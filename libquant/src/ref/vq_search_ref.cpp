// The reference codeword searches: one vector at a time, every codeword in index order, through
// vq_search_core.h. The truth the CPU and CUDA searches are held to.

#include "../vq_detail.h"
#include "../vq_search_core.h"

namespace qs::vq::detail {

void nearest_codewords_reference(std::span<const float> vectors, std::uint64_t count,
                                 const Codebook& codebook, std::span<const float> metric,
                                 std::span<const float> terms, std::span<std::uint32_t> codes) {
  const std::uint32_t d = codebook.tier.d;
  float projected[core::kMaxDimension];
  for (std::uint64_t i = 0; i < count; ++i) {
    core::project(metric.empty() ? nullptr : metric.data(), vectors.data() + i * d, d, projected);
    core::NearestCode best;
    core::search_run(codebook.codewords.data(), terms.data(), 0, codebook.tier.k, projected, d,
                     best);
    codes[i] = best.code();
  }
}

void assign_weighted_reference(std::span<const float> points, std::span<const float> weights,
                               std::uint64_t count, const Centroids& centroids,
                               std::span<std::uint32_t> codes, std::span<float> distances) {
  const std::uint32_t d = centroids.d;
  for (std::uint64_t i = 0; i < count; ++i) {
    const float* x = points.data() + i * d;
    const float* w = weights.empty() ? nullptr : weights.data() + i * d;
    core::NearestCode best;
    for (std::uint32_t k = 0; k < centroids.k; ++k)
      best.offer(core::weighted_distance(x, w, centroids.values.data() + std::uint64_t{k} * d, d),
                 k);
    codes[i] = best.code();
    if (!distances.empty()) distances[i] = best.cost;
  }
}

}  // namespace qs::vq::detail
