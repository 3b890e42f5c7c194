// fit_codebook: weighted k-means on scale-normalised sub-vectors (docs/algorithms/vq.md,
// "Codebooks"). Deterministic for a seed at any thread count and on every backend:
// - k-means++ seeding from a splitmix64 stream mapped to [0, 1) by its top 53 bits (the
//   standard library's distributions differ between implementations);
// - every sum runs in a fixed order: the seeding's Σ D² per fixed chunk of points (four
//   interleaved partial sums), chunks in order; the centroids' Σ w·x and Σ w per cluster over its members in point order (the CPU
//   groups the points by cluster first, so each cluster's sum is one in-order pass);
// - the assignment step is exact (vq_search_core.h weighted_distance; ties to the lowest index)
//   on every backend, so the codes, and hence the sums, never depend on the backend;
// - an empty cluster takes the point farthest from its centroid (ties: lowest index).
// Codewords stay in f32 between rounds and are rounded to the codebook's dtype at the end.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numeric>

#include "qs/ckpt/core/error.h"
#include "qs/quant/int_group.h"
#include "vq_detail.h"
#include "vq_search_core.h"

namespace qs::vq {
namespace detail {
namespace {

constexpr std::uint64_t kSumChunk = 4096;  // points per partial sum of the seeding's D²

// splitmix64 (Steele, Lea, Flood 2014): a tiny generator with a fixed, portable output.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  std::uint64_t state_;
};

template <typename Body>
void for_each_block(std::uint64_t count, std::uint64_t block, bool parallel, Body&& body) {
  if (!parallel) {
    for (std::uint64_t begin = 0; begin < count; begin += block)
      body(begin, std::min(count, begin + block));
    return;
  }
  const std::uint64_t blocks = (count + block - 1) / block;
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, blocks, 1),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    for (std::uint64_t b = range.begin(); b < range.end(); ++b)
      body(b * block, std::min(count, (b + 1) * block));
  });
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

// D²_i = min(D²_i, Σ_j w_ij·(x_ij − c_j)²) for `size` points of transposed coordinates
// (`columns`, `weight_columns` with row stride `stride`; weights null: all 1). Point by point
// the operations of core::weighted_distance in its order; across points element-wise.
QS_VECTOR_CLONES void lower_distances(const float* columns, const float* weight_columns,
                                      std::uint64_t stride, std::uint32_t d,
                                      const float* centroid, std::uint64_t size,
                                      float* squared) {
  float distance[kSumChunk];
  for (std::uint64_t i = 0; i < size; ++i) distance[i] = 0.0f;
  for (std::uint32_t j = 0; j < d; ++j) {
    const float* x = columns + j * stride;
    const float at = centroid[j];
    if (weight_columns) {
      const float* w = weight_columns + j * stride;
      for (std::uint64_t i = 0; i < size; ++i) {
        const float difference = x[i] - at;
        distance[i] = distance[i] + w[i] * (difference * difference);
      }
    } else {
      for (std::uint64_t i = 0; i < size; ++i) {
        const float difference = x[i] - at;
        distance[i] = distance[i] + difference * difference;
      }
    }
  }
  for (std::uint64_t i = 0; i < size; ++i)
    squared[i] = distance[i] < squared[i] ? distance[i] : squared[i];
}

// Σ D² of one chunk in four interleaved f64 partial sums (point i into sum i mod 4), added as
// (s0 + s1) + (s2 + s3): a fixed order the compiler can still vectorise.
double chunk_mass(const float* squared, std::uint64_t size) {
  double lanes[4] = {0.0, 0.0, 0.0, 0.0};
  std::uint64_t i = 0;
  for (; i + 4 <= size; i += 4)
    for (int lane = 0; lane < 4; ++lane) lanes[lane] += squared[i + lane];
  for (; i < size; ++i) lanes[i % 4] += squared[i];
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

std::uint64_t last_positive(std::span<const float> squared, std::uint64_t begin,
                            std::uint64_t end) {
  for (std::uint64_t i = end; i-- > begin;)
    if (squared[i] > 0.0f) return i;
  return begin;
}

// The point the draw `target` ∈ [0, Σ D²) falls on: the chunk where the running chunk masses
// pass it, then the point where the running sum within that chunk does. When rounding leaves
// the target past a sum's end, the last point with D² > 0 there.
std::uint64_t pick_by_mass(std::span<const float> squared, std::span<const double> masses,
                           double target) {
  double before = 0.0;
  for (std::uint64_t chunk = 0; chunk < masses.size(); ++chunk) {
    if (before + masses[chunk] > target) {
      const std::uint64_t begin = chunk * kSumChunk;
      const std::uint64_t end = std::min<std::uint64_t>(squared.size(), begin + kSumChunk);
      double running = before;
      for (std::uint64_t i = begin; i < end; ++i) {
        running += squared[i];
        if (running > target) return i;
      }
      return last_positive(squared, begin, end);
    }
    before += masses[chunk];
  }
  return last_positive(squared, 0, squared.size());
}

// Weighted k-means++ (Arthur & Vassilvitskii 2007): the first centroid a uniformly drawn point,
// each next one a point drawn with probability ∝ its weighted squared distance D² to the
// nearest centroid so far. [k, d] in f32, not rounded. `parallel`: oneTBB over the chunks of
// points (the same result).
std::vector<float> kmeans_seed(std::span<const float> points, std::span<const float> weights,
                               std::uint64_t count, std::uint32_t d, std::uint32_t k,
                               std::uint64_t seed, bool parallel) {
  // Coordinates transposed ([d, count]) so that the pass over all points for each new centroid
  // is a plain element-wise loop; each point's arithmetic is still core::weighted_distance's,
  // in its order.
  std::vector<float> columns(count * d), weight_columns(weights.empty() ? 0 : count * d);
  for (std::uint64_t i = 0; i < count; ++i)
    for (std::uint32_t j = 0; j < d; ++j) {
      columns[j * count + i] = points[i * d + j];
      if (!weights.empty()) weight_columns[j * count + i] = weights[i * d + j];
    }
  SplitMix64 random(seed);
  std::vector<float> centroids(std::uint64_t{k} * d);
  std::vector<float> squared(count, std::numeric_limits<float>::infinity());
  std::vector<double> masses((count + kSumChunk - 1) / kSumChunk);
  std::uint64_t chosen = std::min(count - 1, static_cast<std::uint64_t>(random.uniform() * count));
  for (std::uint32_t c = 0;; ++c) {
    std::copy_n(points.data() + chosen * d, d, centroids.begin() + std::uint64_t{c} * d);
    if (c + 1 == k) break;
    const float* centroid = centroids.data() + std::uint64_t{c} * d;
    for_each_block(count, kSumChunk, parallel, [&](std::uint64_t begin, std::uint64_t end) {
      const float* chunk_weights =
          weight_columns.empty() ? nullptr : weight_columns.data() + begin;
      lower_distances(columns.data() + begin, chunk_weights, count, d, centroid, end - begin,
                      squared.data() + begin);
      masses[begin / kSumChunk] = chunk_mass(squared.data() + begin, end - begin);
    });
    double total = 0.0;
    for (const double mass : masses) total += mass;
    const double u = random.uniform();
    // Every point already sits on a centroid (fewer distinct points than K): cycle through
    // the points, so the spare codewords are duplicates that ties never select.
    chosen = total > 0.0 && std::isfinite(total) ? pick_by_mass(squared, masses, u * total)
                                                 : (c + 1) % count;
  }
  return centroids;
}

}  // namespace
}  // namespace detail

namespace {

void check_sample(std::span<const float> points, std::span<const float> weights,
                  const Tier& tier, DType dtype) {
  if (const std::string problem = vq_tier_problem(tier); !problem.empty())
    throw_bad_input("vq.codebook", problem);
  if (tier.kind == CodebookKind::Uniform)
    throw_bad_input("vq.codebook", fmt::format("tier {} has a uniform codebook; it is not fitted",
                                               tier.name));
  if (dtype != DType::F16 && dtype != DType::BF16)
    throw_bad_input("vq.codebook", fmt::format("codebooks are stored as F16 or BF16, not {}",
                                               dtype_name(dtype)));
  if (points.size() % tier.d != 0 || (!weights.empty() && weights.size() != points.size()))
    throw Error(ErrorClass::Internal, "vq.shape",
                fmt::format("fit_codebook: {} values and {} weights for vectors of {}",
                            points.size(), weights.size(), tier.d));
  if (points.empty())
    throw_bad_input("vq.sample", fmt::format("no sub-vectors to fit tier {}'s codebook on",
                                             tier.name));
  for (std::uint64_t i = 0; i < points.size(); ++i) {
    if (!std::isfinite(points[i]))
      throw_bad_input("vq.non_finite", fmt::format("sub-vector {} of the codebook sample holds {}",
                                                   i / tier.d, points[i]));
    if (!weights.empty() && !(weights[i] >= 0.0f && std::isfinite(weights[i])))
      throw_bad_input("vq.weights", fmt::format("k-means weight {} of sub-vector {} is not a "
                                                "finite non-negative number",
                                                weights[i], i / tier.d));
  }
}

void assign(const detail::Centroids& centroids, std::span<const float> points,
            std::span<const float> weights, std::uint64_t count, Backend backend,
            std::span<std::uint32_t> codes, std::span<float> distances) {
  switch (backend) {
    case Backend::Reference:
      return detail::assign_weighted_reference(points, weights, count, centroids, codes,
                                               distances);
    case Backend::Cpu:
      return detail::assign_weighted_cpu(points, weights, count, centroids, codes, distances);
    case Backend::Cuda:
      return detail::assign_weighted_cuda(points, weights, count, centroids, codes, distances);
  }
}

// New centroids: per cluster and coordinate Σ w·x / Σ w over its members in point order (a
// coordinate no member weighs keeps its value). Returns the clusters without members.
std::vector<std::uint32_t> update_centroids(std::span<const float> points,
                                            std::span<const float> weights, std::uint64_t count,
                                            std::uint32_t d, std::span<const std::uint32_t> codes,
                                            bool parallel, std::vector<float>& centroids) {
  const std::uint64_t k = centroids.size() / d;
  std::vector<double> sums(k * d, 0.0), totals(k * d, 0.0);
  std::vector<std::uint64_t> members(k, 0);
  auto add_point = [&](std::uint64_t i) {
    const std::uint64_t code = codes[i];
    ++members[code];
    for (std::uint32_t j = 0; j < d; ++j) {
      const double weight = weights.empty() ? 1.0 : weights[i * d + j];
      sums[code * d + j] += weight * points[i * d + j];
      totals[code * d + j] += weight;
    }
  };
  if (!parallel) {
    for (std::uint64_t i = 0; i < count; ++i) add_point(i);
  } else {
    // The points grouped by cluster, each group in point order (a stable counting sort), then
    // one in-order pass per cluster: the same additions in the same order as above.
    std::vector<std::uint64_t> start(k + 1, 0);
    for (std::uint64_t i = 0; i < count; ++i) ++start[codes[i] + 1];
    std::partial_sum(start.begin(), start.end(), start.begin());
    std::vector<std::uint64_t> order(count), next(start.begin(), start.end() - 1);
    for (std::uint64_t i = 0; i < count; ++i) order[next[codes[i]]++] = i;
    tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, k, 16),
                      [&](const tbb::blocked_range<std::uint64_t>& range) {
      for (std::uint64_t code = range.begin(); code < range.end(); ++code)
        for (std::uint64_t m = start[code]; m < start[code + 1]; ++m) add_point(order[m]);
    });
  }
  std::vector<std::uint32_t> empty;
  for (std::uint64_t code = 0; code < k; ++code) {
    if (members[code] == 0) empty.push_back(static_cast<std::uint32_t>(code));
    for (std::uint32_t j = 0; j < d; ++j)
      if (totals[code * d + j] > 0.0)
        centroids[code * d + j] = static_cast<float>(sums[code * d + j] / totals[code * d + j]);
  }
  return empty;
}

// Each empty cluster, in index order, takes the farthest remaining point from its centroid
// (distance descending, index ascending).
void reseed_empty(std::span<const std::uint32_t> empty, std::span<const float> points,
                  std::span<float> distances, std::uint32_t d, std::vector<float>& centroids) {
  std::vector<std::uint64_t> order(distances.size());
  std::iota(order.begin(), order.end(), 0);
  const std::uint64_t wanted = std::min<std::uint64_t>(empty.size(), order.size());
  auto farther = [&](std::uint64_t a, std::uint64_t b) {
    return distances[a] != distances[b] ? distances[a] > distances[b] : a < b;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(wanted),
                    order.end(), farther);
  for (std::uint64_t e = 0; e < empty.size(); ++e) {
    const std::uint64_t point = order[e % wanted];
    std::copy_n(points.data() + point * d, d, centroids.begin() + std::uint64_t{empty[e]} * d);
  }
}

}  // namespace

Codebook fit_codebook(std::span<const float> points, std::span<const float> weights,
                      const Tier& tier, DType dtype, const KMeansSettings& settings,
                      Backend backend) {
  check_sample(points, weights, tier, dtype);
  const std::uint32_t d = tier.d;
  const std::uint64_t count = points.size() / d;
  const bool parallel = backend != Backend::Reference;
  std::vector<float> centroids =
      detail::kmeans_seed(points, weights, count, d, tier.k, settings.seed, parallel);
  std::vector<std::uint32_t> codes(count), previous;
  std::vector<float> distances(count);
  for (std::uint32_t round = 0; round < settings.iterations; ++round) {
    assign({d, tier.k, centroids}, points, weights, count, backend, codes, distances);
    if (codes == previous) break;  // the centroids already are these codes' means
    const auto empty = update_centroids(points, weights, count, d, codes, parallel, centroids);
    if (!empty.empty()) reseed_empty(empty, points, distances, d, centroids);
    previous = codes;
    if (!empty.empty()) previous.clear();  // moved centroids: the next assignment must rerun
  }
  Codebook codebook{tier, dtype, std::move(centroids)};
  for (float& value : codebook.codewords) value = intq::round_to_dtype(value, dtype);
  return codebook;
}

}  // namespace qs::vq
