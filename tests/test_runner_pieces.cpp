// The runner's per-family pieces on inputs built here: the rotary embedding (plain, both
// pairings, and YaRN against the table transformers computes), the two router kinds
// (DeepSeek's grouped noaux_tc, Qwen3-MoE's softmax), and the family → pieces choice.

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "qs/run/expert_routing.h"
#include "qs/run/rotary_embedding.h"

namespace qs::run {
namespace {

TEST(RotaryEmbedding, InterleavedRotatesAdjacentPairsAndHalvesRotateTheTwoHalves) {
  const RotaryEmbedding interleaved(4, 10000.0, RotaryPairing::Interleaved);
  const RotaryEmbedding halves(4, 10000.0, RotaryPairing::Halves);
  // Pair 0 turns by 1 rad per position, pair 1 by 10000^(-1/2) = 0.01.
  ASSERT_EQ(interleaved.inverse_frequencies(), (std::vector<float>{1.0f, 0.01f}));
  float a[4] = {1, 0, 1, 0};
  interleaved.rotate(a, 3);
  EXPECT_FLOAT_EQ(a[0], std::cos(3.0f));
  EXPECT_FLOAT_EQ(a[1], std::sin(3.0f));
  EXPECT_FLOAT_EQ(a[2], std::cos(0.03f));
  EXPECT_FLOAT_EQ(a[3], std::sin(0.03f));
  float b[4] = {1, 1, 0, 0};  // pairs (0, 2) and (1, 3)
  halves.rotate(b, 3);
  EXPECT_FLOAT_EQ(b[0], std::cos(3.0f));
  EXPECT_FLOAT_EQ(b[2], std::sin(3.0f));
  EXPECT_FLOAT_EQ(b[1], std::cos(0.03f));
  EXPECT_FLOAT_EQ(b[3], std::sin(0.03f));
  // Position 0 is the identity.
  float c[4] = {0.5f, -2.0f, 3.0f, -0.0f};
  halves.rotate(c, 0);
  EXPECT_EQ(c[0], 0.5f);
  EXPECT_EQ(c[1], -2.0f);
  EXPECT_EQ(c[2], 3.0f);
}

// DeepSeek-V3's rope_scaling on a 16-dim rotary part; the expected table is transformers
// 5.x _compute_yarn_parameters' output for the same parameters.
YarnScaling deepseek_yarn() {
  YarnScaling yarn;
  yarn.factor = 40.0;
  yarn.original_max_position_embeddings = 4096;
  yarn.beta_fast = 32;
  yarn.beta_slow = 1;
  yarn.mscale = 1.0;
  yarn.mscale_all_dim = 1.0;
  return yarn;
}

TEST(RotaryEmbedding, YarnInterpolatesLowFrequenciesAsTransformersDoes) {
  const RotaryEmbedding yarn(16, 10000.0, RotaryPairing::Interleaved, deepseek_yarn());
  const std::vector<float> expected = {0x1.p+0f,        0x1.43d136p-2f, 0x1.99999ap-4f,
                                       0x1.87d1ap-6f,   0x1.4fdf3ap-8f, 0x1.bd9292p-11f,
                                       0x1.a36e2ep-16f, 0x1.094566p-17f};
  ASSERT_EQ(yarn.inverse_frequencies().size(), expected.size());
  for (std::size_t j = 0; j < expected.size(); ++j)
    EXPECT_FLOAT_EQ(yarn.inverse_frequencies()[j], expected[j]) << "pair " << j;
  // mscale == mscale_all_dim: cos/sin unscaled; the softmax scale takes (0.1 ln 40 + 1)².
  EXPECT_EQ(yarn.attention_factor(), 1.0f);
  EXPECT_NEAR(softmax_scale_factor(deepseek_yarn()), 1.8738542070926265, 1e-12);
  auto other = deepseek_yarn();
  other.mscale = 0.707;
  EXPECT_FLOAT_EQ(
      RotaryEmbedding(16, 10000.0, RotaryPairing::Interleaved, other).attention_factor(),
      0.9210423553163399f);
  EXPECT_EQ(softmax_scale_factor(std::nullopt), 1.0);
  other.mscale_all_dim = 0.0;  // absent: the softmax scale stays
  EXPECT_EQ(softmax_scale_factor(other), 1.0);
}

float sigmoid_inverse(float p) { return std::log(p / (1.0f - p)); }

TEST(ExpertRouting, GroupedTopKKeepsTheGroupsWithTheBestTwoScores) {
  // 8 experts in 4 groups of 2; keep 2 groups, pick 2 experts.
  // Group 0: {0.95, 0.05} sums 1.0; group 1: {0.6, 0.6} sums 1.2; group 2: {0.55, 0.5}
  // sums 1.05; group 3: {0.1, 0.1}. Kept: groups 1 and 2, so expert 0 (the single best
  // score) is not chosen: experts 2 and 3 (0.6 each).
  const std::vector<float> probabilities = {0.95f, 0.05f, 0.6f, 0.6f, 0.55f, 0.5f, 0.1f, 0.1f};
  std::vector<float> logits;
  for (float p : probabilities) logits.push_back(sigmoid_inverse(p));
  const RouterSpec spec{RouterScoring::Sigmoid, true, 8, 2, 4, 2, true, 2.5};
  const std::vector<float> no_bias(8, 0.0f);
  const auto routed = route_tokens(spec, logits, 1, no_bias);
  for (std::uint64_t e : {0, 1, 4, 5, 6, 7}) EXPECT_TRUE(routed[e].empty()) << "expert " << e;
  ASSERT_EQ(routed[2].size(), 1u);
  ASSERT_EQ(routed[3].size(), 1u);
  EXPECT_NEAR(routed[2][0].second, 0.5f * 2.5f, 1e-6);  // normalised, × routed_scaling_factor
  EXPECT_NEAR(routed[3][0].second, 0.5f * 2.5f, 1e-6);

  // One group: plain top-k over all experts, expert 0 first.
  const RouterSpec one_group{RouterScoring::Sigmoid, true, 8, 2, 1, 1, true, 1.0};
  const auto flat = route_tokens(one_group, logits, 1, no_bias);
  ASSERT_EQ(flat[0].size(), 1u);
  EXPECT_NEAR(flat[0][0].second, 0.95f / (0.95f + 0.6f), 1e-6);
  // Ties (experts 2 and 3 at 0.6) go to the lower index.
  EXPECT_EQ(flat[2].size(), 1u);
  EXPECT_TRUE(flat[3].empty());
}

TEST(ExpertRouting, CorrectionBiasChoosesButDoesNotWeigh) {
  // 4 experts in 2 groups, keep 1 group, pick 2. The bias on expert 3 decides which group is
  // kept; the chosen experts' weights are their own (unbiased) scores.
  const std::vector<float> probabilities = {0.9f, 0.8f, 0.3f, 0.2f};
  std::vector<float> logits;
  for (float p : probabilities) logits.push_back(sigmoid_inverse(p));
  const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 1.0f};
  const RouterSpec spec{RouterScoring::Sigmoid, true, 4, 2, 2, 1, false, 1.0};
  const auto routed = route_tokens(spec, logits, 1, bias);
  // Biased group sums {0.9 + 0.8, 0.3 + 1.2} = {1.7, 1.5}: group 0 is kept.
  EXPECT_EQ(routed[0].size(), 1u);
  EXPECT_EQ(routed[1].size(), 1u);
  // A bias that makes group 1 win: 0.3 + (0.2 + 1.3) = 1.8 > 1.7.
  const std::vector<float> strong = {0.0f, 0.0f, 0.0f, 1.3f};
  const auto lifted = route_tokens(spec, logits, 1, strong);
  ASSERT_EQ(lifted[3].size(), 1u);
  ASSERT_EQ(lifted[2].size(), 1u);
  EXPECT_NEAR(lifted[3][0].second, 0.2f, 1e-6);  // unbiased, not normalised (norm_topk_prob off)
  EXPECT_NEAR(lifted[2][0].second, 0.3f, 1e-6);
}

TEST(ExpertRouting, SoftmaxTopKRenormalisesOnlyWhenAsked) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), std::log(2.0f), std::log(4.0f)};
  // softmax = {1, 3, 2, 4} / 10; top 2: experts 3 (0.4) and 1 (0.3).
  RouterSpec spec{RouterScoring::Softmax, false, 4, 2, 1, 1, false, 1.0};
  auto routed = route_tokens(spec, logits, 1, {});
  ASSERT_EQ(routed[3].size(), 1u);
  ASSERT_EQ(routed[1].size(), 1u);
  EXPECT_TRUE(routed[0].empty());
  EXPECT_TRUE(routed[2].empty());
  EXPECT_NEAR(routed[3][0].second, 0.4f, 1e-6);
  EXPECT_NEAR(routed[1][0].second, 0.3f, 1e-6);
  spec.normalize = true;
  routed = route_tokens(spec, logits, 1, {});
  EXPECT_NEAR(routed[3][0].second, 4.0f / 7.0f, 1e-6);
  EXPECT_NEAR(routed[1][0].second, 3.0f / 7.0f, 1e-6);
}

TEST(ExpertRouting, RowsAreListedPerExpertInOrder) {
  // Two tokens, each to its own best expert.
  const std::vector<float> logits = {5.0f, 0.0f, 0.0f, 5.0f};
  const RouterSpec spec{RouterScoring::Softmax, false, 2, 1, 1, 1, true, 1.0};
  const auto routed = route_tokens(spec, logits, 2, {});
  ASSERT_EQ(routed[0].size(), 1u);
  ASSERT_EQ(routed[1].size(), 1u);
  EXPECT_EQ(routed[0][0].first, 0u);
  EXPECT_EQ(routed[1][0].first, 1u);
  EXPECT_FLOAT_EQ(routed[0][0].second, 1.0f);
}

}  // namespace
}  // namespace qs::run
