#pragma once
// How a Mixture-of-Experts router turns its logits into each token's experts and weights.
// Two kinds cover the families (docs/models/*.md):
//  - sigmoid scoring with a correction bias and grouped top-k (DeepSeek's noaux_tc, also
//    GLM-5 with one group): the bias only chooses, the weights are the unbiased scores,
//    normalised when norm_topk_prob, times routed_scaling_factor;
//  - softmax over all experts and top-k (Qwen3-MoE), renormalised when norm_topk_prob.

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "qs/ckpt/model/model_family.h"

namespace qs::run {

struct RouterSpec {
  RouterScoring scoring = RouterScoring::Sigmoid;
  bool correction_bias = true;  // noaux_tc: e_score_correction_bias added for the choice
  std::uint64_t experts = 0;
  std::uint64_t experts_per_token = 0;
  std::uint64_t groups = 1;       // n_group: experts split into equal groups
  std::uint64_t groups_kept = 1;  // topk_group: groups whose experts may be chosen
  bool normalize = true;          // norm_topk_prob
  double scaling = 1.0;           // routed_scaling_factor
};

// For each expert, the (row, weight) pairs of the tokens sent to it, rows in increasing order.
using ExpertAssignments = std::vector<std::vector<std::pair<std::uint64_t, float>>>;

// logits: [rows, experts]; correction_bias: [experts] when spec.correction_bias (else empty).
// Ties go to the lower expert (and group) index.
ExpertAssignments route_tokens(const RouterSpec& spec, std::span<const float> logits,
                               std::uint64_t rows, std::span<const float> correction_bias);

}  // namespace qs::run
