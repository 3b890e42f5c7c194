#pragma once
// The vectorised codeword search of the CPU backends: nearest_codewords, k-means' assignment
// step, and any per-row loop that searches one vector at a time (the GPTQ-VQ sweep can call
// search() with its per-column-block terms). The codebook is transposed once (coordinate j of
// every codeword contiguous) and searched eight codewords at a time in vector registers; each
// lane computes one codeword's cost with exactly the scalar operations of vq_search_core.h in
// the same order (host code is built without FMA contraction), keeps its own first minimum,
// and the lanes are merged by (cost, index). The result is core::search_run's over [0, K) bit
// for bit.

#include <cstdint>
#include <vector>

#include "../vq_search_core.h"

namespace qs::vq::cpu {

inline constexpr std::uint32_t kLanes = 8;

struct TransposedCodebook {
  std::uint32_t k = 0;
  std::uint32_t d = 0;
  std::uint32_t padded = 0;        // k rounded up to a multiple of kLanes
  std::vector<float> coordinates;  // [d, padded]: coordinate j of codeword c at j·padded + c

  TransposedCodebook(const float* codewords, std::uint32_t k, std::uint32_t d);  // [k, d]
  // `terms` (k values; null: zeros) followed by +∞ up to `padded`, so padded lanes never win.
  std::vector<float> padded_terms(const float* terms) const;
};

// The first minimum over all K of core::codeword_cost(terms[c], codeword c, y): what
// core::search_run(codewords, terms, 0, K, y, d, best) finds from an empty `best`.
core::NearestCode search(const TransposedCodebook& codebook, const float* padded_terms,
                         const float* y);
// The same for kSearchBatch projected vectors `y` [kSearchBatch, d] in one pass over the
// codebook (into best[0..kSearchBatch)).
inline constexpr std::uint32_t kSearchBatch = 4;
void search_batch(const TransposedCodebook& codebook, const float* padded_terms, const float* y,
                  core::NearestCode* best);

// The first minimum over all K of core::weighted_distance(x, w, codeword c) (w null: all 1);
// `padding` is padded_terms(nullptr).
core::NearestCode nearest_weighted(const TransposedCodebook& codebook, const float* padding,
                                   const float* x, const float* w);
// The same for kSearchBatch consecutive points (`x`, `w` [kSearchBatch, d]; w null: all 1).
void nearest_weighted_batch(const TransposedCodebook& codebook, const float* padding,
                            const float* x, const float* w, core::NearestCode* best);

}  // namespace qs::vq::cpu
