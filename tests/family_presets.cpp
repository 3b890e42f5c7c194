#include "family_presets.h"

namespace qs::testing {

SyntheticModelSpec preset_spec(const char* name) { return synthetic_preset(name).spec; }

nlohmann::json as_plain_json(const nlohmann::ordered_json& ordered) {
  return nlohmann::json::parse(ordered.dump());
}

nlohmann::json preset_config(const char* preset_name,
                             const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config = as_plain_json(config_json(preset_spec(preset_name)));
  if (edit) edit(config);
  return config;
}

}  // namespace qs::testing
