// Feeds arbitrary bytes to the config.json reader as if they were a checkpoint's config.json:
// the JSON reader (nesting cap), the number checks, the layout and GLM-5 dimension readers
// and the compressed-tensors config parser. Each must accept or throw qs::Error (the
// compressed-tensors parser may also throw nlohmann's type errors, as its header states);
// a crash, sanitizer report, hang or other exception is a finding. Accepted dimensions must
// survive a write/read round trip through config_json().

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "qs/ckpt/model/model_family.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/io/config_numbers.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/checkpoint_layout.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/model/tensor_name.h"

namespace {

void read_quantization_config(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("quantization_config")) return;
  try {
    const auto parsed = qs::parse_compressed_tensors_config(config["quantization_config"]);
    for (const char* module : {"model.layers.3.mlp.experts.7.down_proj", "lm_head", ""})
      qs::resolve_compressed_tensors(parsed, module);
  } catch (const qs::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
}

void read_dimensions(const nlohmann::json& config) {
  qs::ModelDimensions dimensions;
  try {
    dimensions = qs::dimensions_from_config(config, "config.json");
  } catch (const qs::Error&) {
    return;
  }
  const auto again =
      qs::dimensions_from_config(nlohmann::json(qs::config_json(dimensions)), "again");
  if (again.num_hidden_layers != dimensions.num_hidden_layers ||
      again.n_routed_experts != dimensions.n_routed_experts ||
      again.hidden_size != dimensions.hidden_size || again.vocab_size != dimensions.vocab_size)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json config;
  try {
    config = qs::parse_json_input(text, "config.invalid_json", "config.json");
    qs::check_config_numbers(config, "config.json");
  } catch (const qs::Error&) {
    return 0;
  }
  qs::model_layout_from_config(config);
  read_dimensions(config);
  read_quantization_config(config);
  return 0;
}
