// The post-attention half of a decoder layer: a SiLU-gated MLP in dense layers; elsewhere the
// routed experts (the router kind from the architecture, expert_routing.h) plus the shared
// expert where the family has one.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "module_names.h"
#include "qs/run/expert_routing.h"
#include "qs/run/language_model.h"
#include "qs/run/linear_observer.h"
#include "qs/run/tensor_ops.h"

namespace qs::run {
namespace {

// The three Linears of a SiLU-gated MLP, by role.
struct GatedMlpRoles {
  TensorRole gate, up, down;
};
constexpr GatedMlpRoles kDenseMlp{TensorRole::DenseGate, TensorRole::DenseUp,
                                  TensorRole::DenseDown};
constexpr GatedMlpRoles kSharedExpert{TensorRole::SharedGate, TensorRole::SharedUp,
                                      TensorRole::SharedDown};
constexpr GatedMlpRoles kRoutedExpert{TensorRole::ExpertGate, TensorRole::ExpertUp,
                                      TensorRole::ExpertDown};

// down(silu(gate x) ⊙ up x) for `rows` rows of x.
std::vector<float> gated_mlp(const WeightLoader& weights, LinearObserver* observer,
                             const GatedMlpRoles& roles, std::uint64_t layer, std::uint64_t expert,
                             std::span<const float> x, std::uint64_t rows) {
  auto gate = observed_linear(weights, observer, module_of(roles.gate, layer, expert), x, rows);
  const auto up = observed_linear(weights, observer, module_of(roles.up, layer, expert), x, rows);
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  return observed_linear(weights, observer, module_of(roles.down, layer, expert), gate, rows);
}

// All-experts calibration: every token through routed expert `expert`, shown only to the
// observer. gate/up share the layer's one input (reported once by the caller); down sees this
// expert's activations of all tokens.
void observe_expert_on_all_tokens(const WeightLoader& weights, LinearObserver& observer,
                                  std::uint64_t layer, std::uint64_t expert,
                                  std::span<const float> x, std::uint64_t rows) {
  auto gate = linear(x, rows, weights.linear(module_of(TensorRole::ExpertGate, layer, expert)));
  const auto up = linear(x, rows, weights.linear(module_of(TensorRole::ExpertUp, layer, expert)));
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
  const std::string down_module = module_of(TensorRole::ExpertDown, layer, expert);
  const Matrix down = weights.linear(down_module);
  observer.observe(down_module, gate, rows, down.cols);
}

}  // namespace

void LanguageModel::feed_forward(std::uint64_t layer, HiddenStates& hidden,
                                 const RunOptions& options) const {
  const auto& a = architecture_;
  const std::uint64_t rows = hidden.batch * hidden.seq, width = a.dimensions.hidden_size;
  HiddenStates normed = hidden;
  rms_norm(normed.values, weights_.vector(tensor_of(TensorRole::PostAttnNorm, layer)),
           static_cast<float>(a.dimensions.rms_norm_eps));
  std::vector<float> output;
  if (!a.dimensions.is_moe_layer(layer)) {
    output = gated_mlp(weights_, options.observer, kDenseMlp, layer, 0, normed.values, rows);
  } else {
    const std::uint64_t experts = a.router.experts;
    const auto router = observed_linear(
        weights_, options.observer, module_of(TensorRole::RouterGate, layer), normed.values, rows);
    // noaux_tc routers carry a correction bias (it chooses experts, never weighs them).
    const auto bias = a.router.correction_bias
                          ? weights_.vector(tensor_of(TensorRole::RouterBias, layer,
                                                      TensorParameter::EScoreCorrectionBias))
                          : std::vector<float>{};
    const auto routed = route_tokens(a.router, router, rows, bias);
    output =
        a.dimensions.n_shared_experts > 0
            ? gated_mlp(weights_, options.observer, kSharedExpert, layer, 0, normed.values, rows)
            : std::vector<float>(rows * width, 0.0f);
    if (options.observer) {
      std::vector<std::uint64_t> counts(experts);
      for (std::uint64_t e = 0; e < experts; ++e) counts[e] = routed[e].size();
      options.observer->routed(layer, counts);
    }
    const bool all_experts = options.observer && options.all_experts;
    if (all_experts) {
      // The calibration store's name for the routed experts' one shared gate/up input.
      options.observer->observe_all_experts_input(fmt::format("model.layers.{}.mlp.experts", layer),
                                                  normed.values, rows, width);
      for (std::uint64_t e = 0; e < experts; ++e)
        observe_expert_on_all_tokens(weights_, *options.observer, layer, e, normed.values, rows);
    }
    std::vector<float> routed_sum(rows * width, 0.0f);
    for (std::uint64_t e = 0; e < experts; ++e) {
      if (routed[e].empty()) continue;
      std::vector<float> inputs(routed[e].size() * width);
      for (std::size_t i = 0; i < routed[e].size(); ++i)
        std::copy_n(normed.values.data() + routed[e][i].first * width, width,
                    inputs.data() + i * width);
      // Under all-experts calibration the observer has seen every expert on every token.
      const auto expert_out = gated_mlp(weights_, all_experts ? nullptr : options.observer,
                                        kRoutedExpert, layer, e, inputs, routed[e].size());
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
