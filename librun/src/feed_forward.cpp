// The post-attention half of a decoder layer: a SiLU-gated MLP in dense layers, the
// sigmoid-routed MoE with shared expert elsewhere (docs/models/glm_moe_dsa.md, "MoE routing").

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "qs/run/glm5_model.h"
#include "qs/run/linear_observer.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

// down(silu(gate x) ⊙ up x) for `rows` rows of x.
std::vector<float> gated_mlp(const WeightLoader& weights, LinearObserver* observer,
                             const std::string& module, std::span<const float> x,
                             std::uint64_t rows) {
  auto gate = observed_linear(weights, observer, module + ".gate_proj", x, rows);
  const auto up = observed_linear(weights, observer, module + ".up_proj", x, rows);
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  return observed_linear(weights, observer, module + ".down_proj", gate, rows);
}

// All-experts calibration: every token through expert `module`, shown only to the observer.
// gate/up share the layer's one input (reported once by the caller); down sees this expert's
// activations of all tokens.
void observe_expert_on_all_tokens(const WeightLoader& weights, LinearObserver& observer,
                                  const std::string& module, std::span<const float> x,
                                  std::uint64_t rows) {
  auto gate = linear(x, rows, weights.linear(module + ".gate_proj"));
  const auto up = linear(x, rows, weights.linear(module + ".up_proj"));
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  const Matrix down = weights.linear(module + ".down_proj");
  observer.observe(module + ".down_proj", gate, rows, down.cols);
}

}  // namespace

void Glm5Model::feed_forward(std::uint64_t layer, HiddenStates& hidden,
                             const RunOptions& options) const {
  const auto& d = dimensions_;
  const std::string p = fmt::format("model.layers.{}.", layer);
  const std::uint64_t rows = hidden.batch * hidden.seq, width = d.hidden_size;
  HiddenStates normed = hidden;
  rms_norm(normed.values, weights_.vector(p + "post_attention_layernorm.weight"),
           static_cast<float>(d.rms_norm_eps));
  std::vector<float> output;
  if (layer < d.first_k_dense_replace) {
    output = gated_mlp(weights_, options.observer, p + "mlp", normed.values, rows);
  } else {
    const std::uint64_t experts = d.n_routed_experts, top = d.num_experts_per_tok;
    const auto router =
        observed_linear(weights_, options.observer, p + "mlp.gate", normed.values, rows);
    const auto bias = weights_.vector(p + "mlp.gate.e_score_correction_bias");
    // Per token: the chosen experts (by biased score) and their weights (unbiased,
    // renormalised, scaled).
    std::vector<std::vector<std::pair<std::uint64_t, float>>> routed(experts);
    for (std::uint64_t r = 0; r < rows; ++r) {
      std::vector<float> score(experts), choice(experts);
      for (std::uint64_t e = 0; e < experts; ++e) {
        score[e] = 1.0f / (1.0f + std::exp(-router[r * experts + e]));
        choice[e] = score[e] + bias[e];
      }
      std::vector<std::uint64_t> order(experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::uint64_t a, std::uint64_t b) { return choice[a] > choice[b]; });
      float total = 0.0f;
      for (std::uint64_t k = 0; k < top; ++k) total += score[order[k]];
      for (std::uint64_t k = 0; k < top; ++k)
        routed[order[k]].emplace_back(
            r, score[order[k]] / (total + 1e-20f) * static_cast<float>(d.routed_scaling_factor));
    }
    output = gated_mlp(weights_, options.observer, p + "mlp.shared_experts", normed.values, rows);
    if (options.observer) {
      std::vector<std::uint64_t> counts(experts);
      for (std::uint64_t e = 0; e < experts; ++e) counts[e] = routed[e].size();
      options.observer->routed(layer, counts);
    }
    const bool all_experts = options.observer && options.all_experts;
    if (all_experts) {
      options.observer->observe_all_experts_input(p + "mlp.experts", normed.values, rows, width);
      for (std::uint64_t e = 0; e < experts; ++e)
        observe_expert_on_all_tokens(weights_, *options.observer,
                                     fmt::format("{}mlp.experts.{}", p, e), normed.values, rows);
    }
    std::vector<float> routed_sum(rows * width, 0.0f);
    for (std::uint64_t e = 0; e < experts; ++e) {
      if (routed[e].empty()) continue;
      std::vector<float> inputs(routed[e].size() * width);
      for (std::size_t i = 0; i < routed[e].size(); ++i)
        std::copy_n(normed.values.data() + routed[e][i].first * width, width,
                    inputs.data() + i * width);
      // Under all-experts calibration the observer has seen every expert on every token.
      const auto expert_out =
          gated_mlp(weights_, all_experts ? nullptr : options.observer,
                    fmt::format("{}mlp.experts.{}", p, e), inputs, routed[e].size());
      for (std::size_t i = 0; i < routed[e].size(); ++i)
        for (std::uint64_t c = 0; c < width; ++c)
          routed_sum[routed[e][i].first * width + c] +=
              routed[e][i].second * expert_out[i * width + c];
    }
    for (std::size_t i = 0; i < output.size(); ++i) output[i] += routed_sum[i];
  }
  for (std::size_t i = 0; i < hidden.values.size(); ++i) hidden.values[i] += output[i];
}

}  // namespace qs::run
