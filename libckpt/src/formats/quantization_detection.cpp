#include "qs/ckpt/formats/quantization_detection.h"

#include <fmt/format.h>

#include <filesystem>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

std::string declared_quantization(const Checkpoint& checkpoint) {
  std::vector<std::string> parts;
  const auto& config = checkpoint.config();
  if (config.is_object() && config.contains("quantization_config")) {
    const auto& quantization = config["quantization_config"];
    std::string method = quantization.value("quant_method", "unknown");
    std::string detail = quantization.contains("format") ? quantization.value("format", "")
                         : quantization.contains("quant_algo")
                             ? quantization.value("quant_algo", "")
                             : "";
    // A VQ declaration beside the groups (docs/formats/vq.md): "compressed-tensors/dense+vq".
    const bool vq = quantization.is_object() && quantization.contains("vq");
    parts.push_back("config.json: " + method + (detail.empty() ? "" : "/" + detail) +
                    (vq ? "+vq" : ""));
  }
  auto legacy = checkpoint.directory() / "hf_quant_config.json";
  if (std::filesystem::exists(std::filesystem::symlink_status(legacy))) {
    auto json = parse_json_or_discarded(read_text_file(legacy));
    std::string algorithm = "unreadable";
    if (json.is_object() && json.contains("quantization") && json["quantization"].is_object())
      algorithm = json["quantization"].value("quant_algo", "unknown");
    parts.push_back("hf_quant_config.json: modelopt/" + algorithm);
  }
  std::string text;
  for (const auto& part : parts) text += (text.empty() ? "" : "; ") + part;
  return text;
}

}  // namespace

const char* weight_layout_name(WeightLayout layout) { return weight_format(layout).name; }

std::map<std::string, ModuleParameters> modules_of(const Checkpoint& checkpoint) {
  std::map<std::string, ModuleParameters> modules;
  for (const auto& location : checkpoint.tensors()) {
    auto parsed = parse_tensor_name(location.info->name);
    if (parsed.parameter_name.empty()) continue;
    modules[parsed.module_path].emplace(parsed.parameter_name, location);
  }
  return modules;
}

WeightLayout classify_module(const ModuleParameters& parameters) {
  return detect_weight_format(parameters).layout;
}

std::optional<Shape> logical_weight_shape(const ModuleParameters& parameters, WeightLayout layout) {
  const auto& format = weight_format(layout);
  if (!format.logical_shape) return std::nullopt;
  return format.logical_shape(parameters);
}

bool is_nvfp4_layout(WeightLayout layout) {
  return weight_format(layout).codes == CodeFamily::Nvfp4;
}

bool is_quantized_layout(WeightLayout layout) { return weight_format(layout).decodable(); }

QuantizationDetection detect_quantization(const Checkpoint& checkpoint) {
  QuantizationDetection detection;
  const DeclaredPackBits declared_bits(checkpoint.config());
  for (const auto& [module, parameters] : modules_of(checkpoint)) {
    if (!code_tensor(parameters)) continue;
    const auto& format = detect_weight_format(parameters);
    auto& count =
        detection
            .layouts[format.label ? format.label(parameters, declared_bits(module)) : format.name];
    ++count.modules;
    for (const auto& [parameter, location] : parameters) count.bytes += location.info->byte_size();
  }

  std::vector<std::string> quantized;
  for (const auto& [label, count] : detection.layouts)
    if (label != weight_format(WeightLayout::Dense).name) quantized.push_back(label);
  detection.summary = quantized.empty()      ? "none"
                      : quantized.size() > 1 ? "mixed"
                                             : quantized.front();
  detection.declared = declared_quantization(checkpoint);
  return detection;
}

}  // namespace qs
