#pragma once
// Synth presets as the model-family tests use them: a preset's spec, and its config.json as a
// plain (unordered) JSON object that a test can edit before handing it to a reader.

#include <functional>
#include <nlohmann/json.hpp>

#include "qs/ckpt/model/synthetic_model.h"

namespace qs::testing {

SyntheticModelSpec preset_spec(const char* name);

// The ordered JSON our writers produce, as the plain object config readers take.
nlohmann::json as_plain_json(const nlohmann::ordered_json& ordered);

// A preset's config.json with `edit` applied.
nlohmann::json preset_config(const char* preset_name,
                             const std::function<void(nlohmann::json&)>& edit = {});

}  // namespace qs::testing
