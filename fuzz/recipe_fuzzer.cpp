// Feeds arbitrary bytes to the recipe readers as if they were a recipe file: the per-tensor
// recipe (YAML, rules, layer selectors, name patterns) and the batch recipe. Each must accept
// or throw qs::Error; a crash, sanitizer report, hang (a pattern that backtracks, a selector
// that loops) or other exception (yaml-cpp's included) is a finding. Accepted rules are then
// matched against a few tensors, as the planner does.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/plan/batch_recipe.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/plan/recipe.h"
#include "qs/ckpt/model/tensor_name.h"

namespace {

void match_rules(const qs::Recipe& recipe) {
  const qs::ModelLayout layout{.num_hidden_layers = 78,
                               .first_k_dense_replace = 3,
                               .moe_layer_freq = 1,
                               .num_nextn_predict_layers = 1};
  const std::string names[] = {
      "model.layers.0.self_attn.q_a_proj.weight",
      "model.layers.77.mlp.experts.255.down_proj.weight",
      "model.layers.78.eh_proj.weight",
      "lm_head.weight",
      std::string(4096, 'a') + "b.weight",  // long names for patterns that could backtrack
  };
  for (const auto& rule : recipe.rules) {
    for (const auto& name : names) {
      const auto parsed = qs::parse_tensor_name(name);
      for (const auto& pattern : rule.modules) pattern.matches_tensor(name);
      if (rule.layers && parsed.layer) rule.layers->matches(*parsed.layer, layout);
      for (std::uint32_t layer : {0u, 1u, 77u, 78u, 4294967295u})
        if (rule.layers) rule.layers->matches(layer, layout);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    match_rules(qs::parse_recipe(text, "fuzz.yaml"));
  } catch (const qs::Error&) {
  }
  try {
    qs::parse_batch_recipe(text, "fuzz.yaml", "/nonexistent");
  } catch (const qs::Error&) {
  }
  return 0;
}
