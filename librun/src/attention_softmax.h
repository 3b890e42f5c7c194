#pragma once
// The softmax-weighted sum of values every attention kind ends with, for one query.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace qs::run {

// out += Σ_t softmax(scores)_t · value(t)[0..width). A masked key has score −∞ (weight 0).
template <typename ValueAt>
void add_softmax_weighted_values(std::vector<float>& scores, ValueAt value, std::uint64_t width,
                                 float* out) {
  float largest = -std::numeric_limits<float>::infinity();
  for (float score : scores) largest = std::max(largest, score);
  float total = 0.0f;
  for (float& score : scores) {
    score = std::exp(score - largest);
    total += score;
  }
  for (std::uint64_t t = 0; t < scores.size(); ++t) {
    const float* v = value(t);
    const float weight = scores[t] / total;
    for (std::uint64_t i = 0; i < width; ++i) out[i] += weight * v[i];
  }
}

}  // namespace qs::run
