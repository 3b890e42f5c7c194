// The CPU codeword searches: oneTBB over vectors, and per vector the codewords eight at a time
// in vector registers. The codebook is transposed once (coordinate j of every codeword
// contiguous) so that each lane computes one codeword's cost with exactly the scalar
// operations of vq_search_core.h in the same order (host code is built without FMA
// contraction); each lane keeps its own first minimum, and the lanes are merged by (cost,
// index), which is the reference's in-order strict-less-than minimum. Hence bit-identical codes
// at any thread count.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <cstring>
#include <limits>
#include <vector>

#include "../vq_detail.h"
#include "../vq_search_core.h"

namespace qs::vq::detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

// Every helper taking or returning these vectors is inlined, so no vector crosses a call
// boundary and the ABI note GCC gives for 32-byte vectors without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

constexpr std::uint32_t kLanes = 8;
using Floats = float __attribute__((vector_size(kLanes * sizeof(float))));
using Ints = std::int32_t __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

[[gnu::always_inline]] inline Floats load(const float* values) {
  Floats vector;
  std::memcpy(&vector, values, sizeof vector);
  return vector;
}

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// Codewords as columns: coordinate j of codeword k at [j·padded + k]; `extra` per codeword
// (the search's term, or k-means' 0), +∞ for the padding up to a multiple of the lane count,
// so padded lanes never win.
struct TransposedCodewords {
  std::uint32_t d = 0;
  std::uint32_t padded = 0;
  std::vector<float> coordinates;
  std::vector<float> extra;

  TransposedCodewords(const float* codewords, std::uint32_t k, std::uint32_t d,
                      const float* terms)
      : d(d), padded((k + kLanes - 1) / kLanes * kLanes),
        coordinates(std::uint64_t{padded} * d, 0.0f), extra(padded, kInfinity) {
    for (std::uint32_t code = 0; code < k; ++code) {
      for (std::uint32_t j = 0; j < d; ++j)
        coordinates[std::uint64_t{j} * padded + code] = codewords[std::uint64_t{code} * d + j];
      extra[code] = terms ? terms[code] : 0.0f;
    }
  }
};

// The lanes' first minima merged into the in-order first minimum.
[[gnu::always_inline]] inline core::NearestCode merge_lanes(const Floats& cost,
                                                            const Ints& index) {
  core::NearestCode best;
  for (std::uint32_t lane = 0; lane < kLanes; ++lane)
    if (index[lane] >= 0) best.merge({cost[lane], static_cast<std::uint32_t>(index[lane])});
  return best;
}

[[gnu::always_inline]] inline Ints first_indices() {
  Ints index;
  for (std::uint32_t lane = 0; lane < kLanes; ++lane) index[lane] = static_cast<std::int32_t>(lane);
  return index;
}

// cost = term − 2·dot(c, y), dot in coordinate order (vq_search_core.h codeword_cost).
template <std::uint32_t D>
[[gnu::always_inline]] inline core::NearestCode search_lanes(const TransposedCodewords& book,
                                                             const float* y) {
  const std::uint32_t d = D != 0 ? D : book.d;
  Floats best_cost = Floats{} + kInfinity;
  Ints best_index = Ints{} - 1;
  Ints index = first_indices();
  for (std::uint32_t k = 0; k < book.padded; k += kLanes) {
    Floats dot = load(book.coordinates.data() + k) * y[0];
    for (std::uint32_t j = 1; j < d; ++j)
      dot = dot + load(book.coordinates.data() + std::uint64_t{j} * book.padded + k) * y[j];
    const Floats cost = load(book.extra.data() + k) - 2.0f * dot;
    const Ints better = cost < best_cost;
    best_cost = better ? cost : best_cost;
    best_index = better ? index : best_index;
    index += static_cast<std::int32_t>(kLanes);
  }
  return merge_lanes(best_cost, best_index);
}

// Σ_j w_j·(x_j − c_j)² in coordinate order (vq_search_core.h weighted_distance), plus the
// padding's +∞.
template <std::uint32_t D>
[[gnu::always_inline]] inline core::NearestCode assign_lanes(const TransposedCodewords& book,
                                                             const float* x, const float* w) {
  const std::uint32_t d = D != 0 ? D : book.d;
  Floats best_cost = Floats{} + kInfinity;
  Ints best_index = Ints{} - 1;
  Ints index = first_indices();
  for (std::uint32_t k = 0; k < book.padded; k += kLanes) {
    Floats sum = Floats{};
    for (std::uint32_t j = 0; j < d; ++j) {
      const Floats difference =
          x[j] - load(book.coordinates.data() + std::uint64_t{j} * book.padded + k);
      const Floats squared = difference * difference;
      sum = sum + (w ? w[j] * squared : squared);
    }
    const Floats cost = sum + load(book.extra.data() + k);
    const Ints better = cost < best_cost;
    best_cost = better ? cost : best_cost;
    best_index = better ? index : best_index;
    index += static_cast<std::int32_t>(kLanes);
  }
  return merge_lanes(best_cost, best_index);
}

// The common d get their own unrolled loops; any other d the general one.
QS_VECTOR_CLONES core::NearestCode search(const TransposedCodewords& book, const float* y) {
  switch (book.d) {
    case 1: return search_lanes<1>(book, y);
    case 2: return search_lanes<2>(book, y);
    case 4: return search_lanes<4>(book, y);
    case 8: return search_lanes<8>(book, y);
    default: return search_lanes<0>(book, y);
  }
}

QS_VECTOR_CLONES core::NearestCode assign(const TransposedCodewords& book, const float* x,
                                          const float* w) {
  switch (book.d) {
    case 1: return assign_lanes<1>(book, x, w);
    case 2: return assign_lanes<2>(book, x, w);
    case 4: return assign_lanes<4>(book, x, w);
    case 8: return assign_lanes<8>(book, x, w);
    default: return assign_lanes<0>(book, x, w);
  }
}

constexpr std::uint64_t kVectorsPerTask = 256;

}  // namespace

void nearest_codewords_cpu(std::span<const float> vectors, std::uint64_t count,
                           const Codebook& codebook, std::span<const float> metric,
                           std::span<const float> terms, std::span<std::uint32_t> codes) {
  const std::uint32_t d = codebook.tier.d;
  const TransposedCodewords book(codebook.codewords.data(), codebook.tier.k, d, terms.data());
  const float* metric_values = metric.empty() ? nullptr : metric.data();
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, count, kVectorsPerTask),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    float projected[core::kMaxDimension];
    for (std::uint64_t i = range.begin(); i < range.end(); ++i) {
      core::project(metric_values, vectors.data() + i * d, d, projected);
      codes[i] = search(book, projected).code();
    }
  });
}

void assign_weighted_cpu(std::span<const float> points, std::span<const float> weights,
                         std::uint64_t count, const Centroids& centroids,
                         std::span<std::uint32_t> codes, std::span<float> distances) {
  const std::uint32_t d = centroids.d;
  const TransposedCodewords book(centroids.values.data(), centroids.k, d, nullptr);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, count, kVectorsPerTask),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    for (std::uint64_t i = range.begin(); i < range.end(); ++i) {
      const core::NearestCode best = assign(book, points.data() + i * d,
                                            weights.empty() ? nullptr : weights.data() + i * d);
      codes[i] = best.code();
      if (!distances.empty()) distances[i] = best.cost;
    }
  });
}

}  // namespace qs::vq::detail
