#include "qs/ckpt/formats/quantized_weight.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"

namespace qs {

DeclaredPackBits::DeclaredPackBits(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("quantization_config")) return;
  const auto& block = config.at("quantization_config");
  if (!block.is_object() || block.value("quant_method", std::string()) != "compressed-tensors")
    return;
  try {
    config_ = parse_compressed_tensors_config(block);
  } catch (const std::exception&) {  // unreadable: validate's int.config_mismatch reports it
    config_.reset();
  }
}

int DeclaredPackBits::operator()(const std::string& module) const {
  if (!config_) return 0;
  const auto* group = covering_group(*config_, module);
  return group && group->format == "pack-quantized" && group->type == "int" ? group->bits : 0;
}

QuantizedWeight checked_quantized_weight(const std::string& module,
                                         const ModuleParameters& parameters, int declared_bits,
                                         const std::string& kind) {
  const auto& format = detect_weight_format(parameters);
  if (format.decodable()) return format.check(module, parameters, declared_bits, kind);
  throw_bad_input(kind,
                  fmt::format("stored as {}, which quantsmith does not decode", format.name),
                  {}, module);
}

}  // namespace qs
