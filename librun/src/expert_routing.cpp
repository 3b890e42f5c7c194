#include "qs/run/expert_routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace qs::run {
namespace {

// Indices of `values` by decreasing value, the earlier index first among equals.
std::vector<std::uint64_t> descending_order(std::span<const float> values) {
  std::vector<std::uint64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint64_t a, std::uint64_t b) { return values[a] > values[b]; });
  return order;
}

// noaux_tc's group limit: a group scores the sum of its two best biased scores; the experts of
// all but the best `groups_kept` groups are taken out of the choice.
void keep_best_groups(const RouterSpec& spec, std::vector<float>& choice) {
  if (spec.groups <= 1 || spec.groups_kept >= spec.groups) return;
  const std::uint64_t per_group = spec.experts / spec.groups;
  std::vector<float> group_score(spec.groups);
  for (std::uint64_t g = 0; g < spec.groups; ++g) {
    const std::span<const float> members{choice.data() + g * per_group, per_group};
    const auto order = descending_order(members);
    group_score[g] = members[order[0]] + (per_group > 1 ? members[order[1]] : 0.0f);
  }
  const auto ranked = descending_order(group_score);
  for (std::uint64_t k = spec.groups_kept; k < spec.groups; ++k)
    std::fill_n(choice.data() + ranked[k] * per_group, per_group,
                -std::numeric_limits<float>::infinity());
}

}  // namespace

ExpertAssignments route_tokens(const RouterSpec& spec, std::span<const float> logits,
                               std::uint64_t rows, std::span<const float> correction_bias) {
  const std::uint64_t experts = spec.experts, top = spec.experts_per_token;
  ExpertAssignments routed(experts);
  std::vector<float> score(experts), choice(experts);
  for (std::uint64_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * experts;
    if (spec.scoring == RouterScoring::Sigmoid) {
      for (std::uint64_t e = 0; e < experts; ++e) score[e] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      const float largest = *std::max_element(row, row + experts);
      float total = 0.0f;
      for (std::uint64_t e = 0; e < experts; ++e) total += score[e] = std::exp(row[e] - largest);
      for (std::uint64_t e = 0; e < experts; ++e) score[e] /= total;
    }
    for (std::uint64_t e = 0; e < experts; ++e)
      choice[e] = spec.correction_bias ? score[e] + correction_bias[e] : score[e];
    keep_best_groups(spec, choice);
    const auto order = descending_order(choice);
    float total = 0.0f;
    for (std::uint64_t k = 0; k < top; ++k) total += score[order[k]];
    // Sigmoid routers add 1e-20 to the sum (DeepSeek's guard against all-zero scores);
    // softmax probabilities cannot all be zero.
    const float denominator = spec.scoring == RouterScoring::Sigmoid ? total + 1e-20f : total;
    const auto scaling = static_cast<float>(spec.scaling);
    for (std::uint64_t k = 0; k < top; ++k) {
      const float weight = spec.normalize ? score[order[k]] / denominator : score[order[k]];
      routed[order[k]].emplace_back(r, weight * scaling);
    }
  }
  return routed;
}

}  // namespace qs::run
