#pragma once
// The codeword search's arithmetic, shared by every backend that picks codes (the reference and
// CPU nearest_codewords, the CUDA kernel, and the GPTQ-VQ sweep's per-row loop on host and
// device). One fixed order of float operations lives here, so the backends agree bit for bit.
//
// The cost of codeword c for the scale-normalised vector x (d values) under the metric M (d×d,
// symmetric positive definite; the identity for Euclidean) is (x − c)ᵀ M (x − c). Its xᵀMx part
// is the same for every codeword, so the search compares
//
//     cost(c) = term(c) − 2·cᵀy,   term(c) = cᵀMc (Euclidean: ‖c‖²),   y = M·x (Euclidean: x)
//
// which is O(d) per codeword once term is precomputed per codeword (per metric) and y per
// vector. Every sum runs over its index in increasing order, left to right, in f32:
//     dot(a, b)   = ((a0·b0 + a1·b1) + a2·b2) + …
//     y_i         = dot(M row i, x)
//     term(c)     = dot(c, M·c)             (Euclidean: dot(c, c))
//     cost(c)     = term(c) − 2·dot(c, y)
// The smallest cost wins; ties go to the lowest index; a NaN cost never wins, and when no cost
// is below +∞ the code is 0. Device code uses the _rn intrinsics, which nvcc never fuses into
// multiply-adds, so the .cu files that include this need no -fmad=false of their own (host
// code is compiled with -ffp-contract=off).

#include <cstdint>
#include <limits>

#include "qs/ckpt/core/host_device.h"

namespace qs::vq::core {

QS_HOST_DEVICE inline float multiply(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

QS_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

QS_HOST_DEVICE inline float subtract(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// ((a0·b0 + a1·b1) + a2·b2) + …
QS_HOST_DEVICE inline float dot(const float* a, const float* b, std::uint32_t d) {
  float sum = multiply(a[0], b[0]);
  for (std::uint32_t j = 1; j < d; ++j) sum = add(sum, multiply(a[j], b[j]));
  return sum;
}

// y = M·x (`metric` row-major d×d); a null metric is the identity (y = x).
QS_HOST_DEVICE inline void project(const float* metric, const float* x, std::uint32_t d,
                                   float* y) {
  for (std::uint32_t i = 0; i < d; ++i) y[i] = metric ? dot(metric + i * d, x, d) : x[i];
}

// term(c) = cᵀMc, or ‖c‖² for a null metric. d ≤ kMaxDimension.
inline constexpr std::uint32_t kMaxDimension = 128;  // d divides the 128-column scale group
QS_HOST_DEVICE inline float codeword_term(const float* codeword, const float* metric,
                                          std::uint32_t d) {
  if (!metric) return dot(codeword, codeword, d);
  float projected[kMaxDimension] = {};
  project(metric, codeword, d, projected);
  return dot(codeword, projected, d);
}

// cost(c) = term(c) − 2·cᵀy.
QS_HOST_DEVICE inline float codeword_cost(float term, const float* codeword, const float* y,
                                          std::uint32_t d) {
  return subtract(term, multiply(2.0f, dot(codeword, y, d)));
}

// k-means' distance of the point x to the centroid c under per-coordinate weights w:
// Σ_j w_j·(x_j − c_j)² in j order (w null: all 1, which gives the same bits as w_j = 1).
// Computed directly rather than expanded: the weights differ per point, so no per-codeword
// term could be precomputed, and the direct form keeps k-means' distances exact for far points.
QS_HOST_DEVICE inline float weighted_distance(const float* x, const float* w, const float* c,
                                              std::uint32_t d) {
  float sum = 0.0f;
  for (std::uint32_t j = 0; j < d; ++j) {
    const float difference = subtract(x[j], c[j]);
    const float squared = multiply(difference, difference);
    sum = add(sum, w ? multiply(w[j], squared) : squared);
  }
  return sum;
}

// The best codeword seen so far. index kNone: nothing below +∞ yet.
struct NearestCode {
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  float cost = std::numeric_limits<float>::infinity();
  std::uint32_t index = kNone;

  // Codes offered in increasing index order: strictly smaller wins, so ties keep the first.
  QS_HOST_DEVICE void offer(float candidate_cost, std::uint32_t candidate) {
    if (candidate_cost < cost) {
      cost = candidate_cost;
      index = candidate;
    }
  }
  // Merges a result over codes that may lie before or after this one's (lanes, chunks): the
  // smaller cost, on equal costs the lower index — what one in-order pass would have found.
  QS_HOST_DEVICE void merge(const NearestCode& other) {
    if (other.index == kNone) return;
    if (index == kNone || other.cost < cost || (other.cost == cost && other.index < index)) {
      cost = other.cost;
      index = other.index;
    }
  }
  QS_HOST_DEVICE std::uint32_t code() const { return index == kNone ? 0u : index; }
};

// Offers codewords [begin, end) of `codewords` ([K, d] row-major) with their `terms` to `best`
// for the projected vector y.
QS_HOST_DEVICE inline void search_run(const float* codewords, const float* terms,
                                      std::uint32_t begin, std::uint32_t end, const float* y,
                                      std::uint32_t d, NearestCode& best) {
  for (std::uint32_t k = begin; k < end; ++k)
    best.offer(codeword_cost(terms[k], codewords + static_cast<std::uint64_t>(k) * d, y, d), k);
}

}  // namespace qs::vq::core
