#include "qs/run/architecture.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"

namespace qs::run {
namespace {

std::optional<YarnScaling> yarn_of(const ModelDimensions& d, const std::string& file) {
  if (!d.rope_scaling) return std::nullopt;
  const auto& scaling = *d.rope_scaling;
  if (scaling.type != "yarn")
    throw_bad_input(
        "run.unsupported_rope_scaling",
        fmt::format("rope_scaling type \"{}\": the runner applies yarn only", scaling.type), file);
  YarnScaling yarn;
  yarn.factor = scaling.factor;
  yarn.original_max_position_embeddings =
      static_cast<double>(scaling.original_max_position_embeddings);
  yarn.beta_fast = scaling.beta_fast;
  yarn.beta_slow = scaling.beta_slow;
  yarn.mscale = scaling.mscale;
  yarn.mscale_all_dim = scaling.mscale_all_dim;
  return yarn;
}

RouterSpec router_of(const ModelDimensions& d) {
  RouterSpec spec;
  spec.scoring = d.scoring_func;
  // noaux_tc: the correction bias picks, within the best topk_group of n_group groups.
  spec.correction_bias = d.topk_method == TopkMethod::NoauxTc;
  spec.experts = d.n_routed_experts;
  spec.experts_per_token = d.num_experts_per_tok;
  spec.groups = spec.correction_bias ? d.n_group : 1;
  spec.groups_kept = spec.correction_bias ? d.topk_group : 1;
  spec.normalize = d.norm_topk_prob;
  spec.scaling = d.routed_scaling_factor;
  return spec;
}

}  // namespace

RunnerArchitecture runner_architecture(const Checkpoint& checkpoint) {
  const auto file = (checkpoint.directory() / "config.json").string();
  RunnerArchitecture a;
  a.dimensions = dimensions_from_config(checkpoint.config(), file);
  a.family = &model_family(a.dimensions.family);
  a.rotary_pairing =
      a.dimensions.rope_interleave ? RotaryPairing::Interleaved : RotaryPairing::Halves;
  a.yarn = yarn_of(a.dimensions, file);
  a.router = router_of(a.dimensions);
  return a;
}

}  // namespace qs::run
