// The CPU codeword searches (cpu/vq_search_lanes.h): eight codewords per vector register,
// oneTBB over vectors for nearest_codewords and k-means' assignment. Each vector's code depends
// only on that vector, so the result is the same at any thread count.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <cstring>
#include <limits>
#include <vector>

#include "../vq_detail.h"
#include "vq_search_lanes.h"

namespace qs::vq {
namespace cpu {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

// Every helper taking or returning these vectors is inlined, so no vector crosses a call
// boundary and the ABI note GCC gives for 32-byte vectors without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

using Floats = float __attribute__((vector_size(kLanes * sizeof(float))));
using Ints = std::int32_t __attribute__((vector_size(kLanes * sizeof(std::int32_t))));

constexpr float kInfinity = std::numeric_limits<float>::infinity();

[[gnu::always_inline]] inline Floats load(const float* values) {
  Floats vector;
  std::memcpy(&vector, values, sizeof vector);
  return vector;
}

[[gnu::always_inline]] inline Ints first_indices() {
  Ints index;
  for (std::uint32_t lane = 0; lane < kLanes; ++lane) index[lane] = static_cast<std::int32_t>(lane);
  return index;
}

// Each lane's first minimum so far; merged, the in-order first minimum.
struct LaneMinima {
  Floats cost = Floats{} + kInfinity;
  Ints index = Ints{} - 1;

  [[gnu::always_inline]] void offer(const Floats& candidate, const Ints& candidate_index) {
    const Ints better = candidate < cost;
    cost = better ? candidate : cost;
    index = better ? candidate_index : index;
  }
  [[gnu::always_inline]] core::NearestCode merged() const {
    core::NearestCode best;
    for (std::uint32_t lane = 0; lane < kLanes; ++lane)
      if (index[lane] >= 0) best.merge({cost[lane], static_cast<std::uint32_t>(index[lane])});
    return best;
  }
};

// cost = term − 2·dot(c, y), dot in coordinate order (core::codeword_cost), for V projected
// vectors at once (`y` [V, d]): each block of codewords is loaded once for all V.
template <std::uint32_t D, std::uint32_t V>
[[gnu::always_inline]] inline void search_lanes(const TransposedCodebook& book,
                                                const float* terms, const float* y,
                                                core::NearestCode* best) {
  const std::uint32_t d = D != 0 ? D : book.d;
  LaneMinima minima[V];
  Ints index = first_indices();
  for (std::uint32_t k = 0; k < book.padded; k += kLanes) {
    const Floats first = load(book.coordinates.data() + k);
    const Floats term = load(terms + k);
    Floats dot[V];
    for (std::uint32_t v = 0; v < V; ++v) dot[v] = first * y[v * d];
    for (std::uint32_t j = 1; j < d; ++j) {
      const Floats coordinate = load(book.coordinates.data() + std::uint64_t{j} * book.padded + k);
      for (std::uint32_t v = 0; v < V; ++v) dot[v] = dot[v] + coordinate * y[v * d + j];
    }
    for (std::uint32_t v = 0; v < V; ++v) minima[v].offer(term - 2.0f * dot[v], index);
    index += static_cast<std::int32_t>(kLanes);
  }
  for (std::uint32_t v = 0; v < V; ++v) best[v] = minima[v].merged();
}

// Σ_j w_j·(x_j − c_j)² in coordinate order (core::weighted_distance), plus the padding's +∞
// (0 for real codewords: adding it changes no cost), for V points at once (`x`, `w` [V, d];
// `w` null: all 1).
template <std::uint32_t D, std::uint32_t V>
[[gnu::always_inline]] inline void weighted_lanes(const TransposedCodebook& book,
                                                  const float* padding, const float* x,
                                                  const float* w, core::NearestCode* best) {
  const std::uint32_t d = D != 0 ? D : book.d;
  LaneMinima minima[V];
  Ints index = first_indices();
  for (std::uint32_t k = 0; k < book.padded; k += kLanes) {
    Floats sum[V];
    for (std::uint32_t v = 0; v < V; ++v) sum[v] = Floats{};
    for (std::uint32_t j = 0; j < d; ++j) {
      const Floats coordinate = load(book.coordinates.data() + std::uint64_t{j} * book.padded + k);
      for (std::uint32_t v = 0; v < V; ++v) {
        const Floats difference = x[v * d + j] - coordinate;
        const Floats squared = difference * difference;
        sum[v] = sum[v] + (w ? w[v * d + j] * squared : squared);
      }
    }
    const Floats pad = load(padding + k);
    for (std::uint32_t v = 0; v < V; ++v) minima[v].offer(sum[v] + pad, index);
    index += static_cast<std::int32_t>(kLanes);
  }
  for (std::uint32_t v = 0; v < V; ++v) best[v] = minima[v].merged();
}

template <std::uint32_t V>
[[gnu::always_inline]] inline void weighted_for_d(const TransposedCodebook& book,
                                                  const float* padding, const float* x,
                                                  const float* w, core::NearestCode* best) {
  switch (book.d) {
    case 1: return weighted_lanes<1, V>(book, padding, x, w, best);
    case 2: return weighted_lanes<2, V>(book, padding, x, w, best);
    case 4: return weighted_lanes<4, V>(book, padding, x, w, best);
    case 8: return weighted_lanes<8, V>(book, padding, x, w, best);
    default: return weighted_lanes<0, V>(book, padding, x, w, best);
  }
}

// The common d get their own unrolled loops; any other d the general one.
template <std::uint32_t V>
[[gnu::always_inline]] inline void search_for_d(const TransposedCodebook& book, const float* terms,
                                                const float* y, core::NearestCode* best) {
  switch (book.d) {
    case 1: return search_lanes<1, V>(book, terms, y, best);
    case 2: return search_lanes<2, V>(book, terms, y, best);
    case 4: return search_lanes<4, V>(book, terms, y, best);
    case 8: return search_lanes<8, V>(book, terms, y, best);
    default: return search_lanes<0, V>(book, terms, y, best);
  }
}

}  // namespace

TransposedCodebook::TransposedCodebook(const float* codewords, std::uint32_t k, std::uint32_t d)
    : k(k), d(d), padded((k + kLanes - 1) / kLanes * kLanes),
      coordinates(std::uint64_t{padded} * d, 0.0f) {
  for (std::uint32_t code = 0; code < k; ++code)
    for (std::uint32_t j = 0; j < d; ++j)
      coordinates[std::uint64_t{j} * padded + code] = codewords[std::uint64_t{code} * d + j];
}

std::vector<float> TransposedCodebook::padded_terms(const float* terms) const {
  std::vector<float> padded_values(padded, kInfinity);
  for (std::uint32_t code = 0; code < k; ++code) padded_values[code] = terms ? terms[code] : 0.0f;
  return padded_values;
}

QS_VECTOR_CLONES core::NearestCode search(const TransposedCodebook& codebook,
                                          const float* padded_terms, const float* y) {
  core::NearestCode best;
  search_for_d<1>(codebook, padded_terms, y, &best);
  return best;
}

QS_VECTOR_CLONES void search_batch(const TransposedCodebook& codebook, const float* padded_terms,
                                   const float* y, core::NearestCode* best) {
  search_for_d<kSearchBatch>(codebook, padded_terms, y, best);
}

QS_VECTOR_CLONES core::NearestCode nearest_weighted(const TransposedCodebook& codebook,
                                                    const float* padding, const float* x,
                                                    const float* w) {
  core::NearestCode best;
  weighted_for_d<1>(codebook, padding, x, w, &best);
  return best;
}

QS_VECTOR_CLONES void nearest_weighted_batch(const TransposedCodebook& codebook,
                                             const float* padding, const float* x,
                                             const float* w, core::NearestCode* best) {
  weighted_for_d<kSearchBatch>(codebook, padding, x, w, best);
}

}  // namespace cpu

namespace detail {
namespace {
constexpr std::uint64_t kVectorsPerTask = 256;
}  // namespace

void nearest_codewords_cpu(std::span<const float> vectors, std::uint64_t count,
                           const Codebook& codebook, std::span<const float> metric,
                           std::span<const float> terms, std::span<std::uint32_t> codes) {
  const std::uint32_t d = codebook.tier.d;
  const cpu::TransposedCodebook book(codebook.codewords.data(), codebook.tier.k, d);
  const std::vector<float> padded_terms = book.padded_terms(terms.data());
  const float* metric_values = metric.empty() ? nullptr : metric.data();
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, count, kVectorsPerTask),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    constexpr std::uint32_t kBatch = cpu::kSearchBatch;
    float projected[kBatch * core::kMaxDimension];
    core::NearestCode best[kBatch];
    std::uint64_t i = range.begin();
    for (; i + kBatch <= range.end(); i += kBatch) {
      for (std::uint32_t v = 0; v < kBatch; ++v)
        core::project(metric_values, vectors.data() + (i + v) * d, d, projected + v * d);
      cpu::search_batch(book, padded_terms.data(), projected, best);
      for (std::uint32_t v = 0; v < kBatch; ++v) codes[i + v] = best[v].code();
    }
    for (; i < range.end(); ++i) {
      core::project(metric_values, vectors.data() + i * d, d, projected);
      codes[i] = cpu::search(book, padded_terms.data(), projected).code();
    }
  });
}

void assign_weighted_cpu(std::span<const float> points, std::span<const float> weights,
                         std::uint64_t count, const Centroids& centroids,
                         std::span<std::uint32_t> codes, std::span<float> distances) {
  const std::uint32_t d = centroids.d;
  const cpu::TransposedCodebook book(centroids.values.data(), centroids.k, d);
  const std::vector<float> padding = book.padded_terms(nullptr);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, count, kVectorsPerTask),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    auto weight = [&](std::uint64_t i) {
      return weights.empty() ? nullptr : weights.data() + i * d;
    };
    auto store = [&](std::uint64_t i, const core::NearestCode& best) {
      codes[i] = best.code();
      if (!distances.empty()) distances[i] = best.cost;
    };
    constexpr std::uint32_t kBatch = cpu::kSearchBatch;
    core::NearestCode best[kBatch];
    std::uint64_t i = range.begin();
    for (; i + kBatch <= range.end(); i += kBatch) {
      cpu::nearest_weighted_batch(book, padding.data(), points.data() + i * d, weight(i), best);
      for (std::uint32_t v = 0; v < kBatch; ++v) store(i + v, best[v]);
    }
    for (; i < range.end(); ++i)
      store(i, cpu::nearest_weighted(book, padding.data(), points.data() + i * d, weight(i)));
  });
}

}  // namespace detail
}  // namespace qs::vq
