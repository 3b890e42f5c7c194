#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/fp8_block_format.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <filesystem>

#include "qs/ckpt/io/checked_tensor.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/formats/packed_int32.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/model/tensor_name.h"

namespace qs {
namespace {

bool has(const ModuleParameters& parameters, const char* name) {
  return parameters.count(name) != 0;
}

bool has(const ModuleParameters& parameters, const char* name, DType dtype) {
  auto it = parameters.find(name);
  return it != parameters.end() && it->second.info->dtype == dtype;
}

// The width of pack-quantized codes stored as packed_words(K, bits) int32 words per row, 0 when
// none fits. Common widths first: with padding to whole words, a narrow K can fit two widths,
// and 7-bit codes always pack like 8-bit ones (four per word), so only a config can say 7.
int packed_width(std::uint64_t in_features, std::uint64_t words_per_row) {
  for (int bits : {4, 8, 2, 3, 5, 6})
    if (packed_words(in_features, bits) == words_per_row) return bits;
  return 0;
}

// "pack-quantized-int4"; K is in weight_shape. The config's num_bits (`declared_bits`, 0 when
// none) wins where the packing fits it: only it can say 7.
std::string pack_quantized_label(const ModuleParameters& parameters, int declared_bits) {
  const std::string base = weight_layout_name(WeightLayout::PackQuantized);
  const auto shape = logical_weight_shape(parameters, WeightLayout::PackQuantized);
  if (!shape) return base;
  const auto words = parameters.at("weight_packed").info->shape[1];
  const bool declared_fits =
      declared_bits >= 2 && declared_bits <= 8 && packed_words((*shape)[1], declared_bits) == words;
  const int bits = declared_fits ? declared_bits : packed_width((*shape)[1], words);
  return bits ? base + "-int" + std::to_string(bits) : base;
}

bool is_float(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32 || dtype == DType::F64;
}

// Checked most specific first; the first predicate that holds names the layout.
struct LayoutRule {
  WeightLayout layout;
  bool (*matches)(const ModuleParameters&);
};

constexpr std::array<LayoutRule, 7> kLayoutRules{{
    {WeightLayout::Nvfp4Modelopt,
     [](const ModuleParameters& p) {
       return has(p, "weight", DType::U8) && has(p, "weight_scale", DType::F8_E4M3) &&
              has(p, "weight_scale_2");
     }},
    {WeightLayout::Nvfp4CompressedTensors,
     [](const ModuleParameters& p) {
       return has(p, "weight_packed", DType::U8) && has(p, "weight_global_scale");
     }},
    {WeightLayout::PackQuantized,
     [](const ModuleParameters& p) {
       return has(p, "weight_packed", DType::I32) && has(p, "weight_scale");
     }},
    {WeightLayout::Int8,
     [](const ModuleParameters& p) {
       return has(p, "weight", DType::I8) && has(p, "weight_scale");
     }},
    {WeightLayout::Fp8Block,
     [](const ModuleParameters& p) {
       return has(p, "weight", DType::F8_E4M3) && has(p, kFp8ScaleParameter);
     }},
    {WeightLayout::Fp8,
     [](const ModuleParameters& p) {
       return has(p, "weight", DType::F8_E4M3) && has(p, "weight_scale");
     }},
    {WeightLayout::Dense,
     [](const ModuleParameters& p) {
       auto it = p.find("weight");
       return it != p.end() && is_float(it->second.info->dtype) && !has(p, "weight_scale") &&
              !has(p, "weight_packed") && !has(p, kFp8ScaleParameter);
     }},
}};

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
    parts.push_back("config.json: " + method + (detail.empty() ? "" : "/" + detail));
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

const char* weight_layout_name(WeightLayout layout) {
  switch (layout) {
    case WeightLayout::Dense:
      return "dense";
    case WeightLayout::Nvfp4Modelopt:
      return "nvfp4-modelopt";
    case WeightLayout::Nvfp4CompressedTensors:
      return "nvfp4-compressed-tensors";
    case WeightLayout::PackQuantized:
      return "pack-quantized";
    case WeightLayout::Int8:
      return "int8";
    case WeightLayout::Fp8:
      return "fp8";
    case WeightLayout::Fp8Block:
      return "fp8-block";
    case WeightLayout::Unrecognized:
      return "unrecognized";
  }
  return "unrecognized";
}

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
  for (const auto& rule : kLayoutRules)
    if (rule.matches(parameters)) return rule.layout;
  return WeightLayout::Unrecognized;
}

std::optional<Shape> logical_weight_shape(const ModuleParameters& parameters, WeightLayout layout) {
  auto two_dimensional = [&](const char* name) -> const TensorInfo* {
    const auto found = parameters.find(name);
    return found != parameters.end() && found->second.info->shape.size() == 2 ? found->second.info
                                                                              : nullptr;
  };
  switch (layout) {
    case WeightLayout::Dense:
    case WeightLayout::Int8:
    case WeightLayout::Fp8:
    case WeightLayout::Fp8Block:
      if (const auto* weight = two_dimensional("weight")) return weight->shape;
      return std::nullopt;
    case WeightLayout::Nvfp4Modelopt:
    case WeightLayout::Nvfp4CompressedTensors: {
      const auto* codes =
          two_dimensional(layout == WeightLayout::Nvfp4Modelopt ? "weight" : "weight_packed");
      if (!codes) return std::nullopt;
      return Shape{codes->shape[0], codes->shape[1] * 2};
    }
    case WeightLayout::PackQuantized: {
      const auto* packed = two_dimensional("weight_packed");
      const auto shape_it = parameters.find("weight_shape");
      if (!packed || shape_it == parameters.end()) return std::nullopt;
      try {  // the one reader of weight_shape (I64 [2], positive), as validate checks it
        const auto [rows, cols] = read_weight_shape(shape_it->second, "layout.weight_shape");
        if (rows != packed->shape[0]) return std::nullopt;
        return Shape{rows, cols};
      } catch (const Error&) {
        return std::nullopt;
      }
    }
    case WeightLayout::Unrecognized:
      return std::nullopt;
  }
  return std::nullopt;
}

bool is_nvfp4_layout(WeightLayout layout) {
  return layout == WeightLayout::Nvfp4Modelopt || layout == WeightLayout::Nvfp4CompressedTensors;
}

bool is_quantized_layout(WeightLayout layout) {
  return is_nvfp4_layout(layout) || layout == WeightLayout::PackQuantized ||
         layout == WeightLayout::Fp8Block;
}

std::vector<std::string> weight_parameters(WeightLayout layout, bool optional_companion) {
  // The writers' specs hold the names; module and sizes here are placeholders.
  const std::string module = "m";
  std::vector<TensorSpec> specs;
  if (is_nvfp4_layout(layout)) {
    specs =
        nvfp4_output_specs(module, 16, 16,
                           layout == WeightLayout::Nvfp4Modelopt ? OutputFormat::Modelopt
                                                                 : OutputFormat::CompressedTensors,
                           optional_companion);
  } else if (layout == WeightLayout::PackQuantized) {
    IntegerOptions options;
    options.symmetric = !optional_companion;
    options.group_size = kChannelGroup;
    specs = integer_output_specs(module, 1, 32, DType::BF16, options);
  } else if (layout == WeightLayout::Fp8Block) {
    specs = fp8_block_output_specs(module, 1, 1);
  }
  std::vector<std::string> names;
  for (const auto& spec : specs) names.push_back(spec.name.substr(module.size() + 1));
  return names;
}

IntegerOptions pack_quantized_options(const std::string& module, const ModuleParameters& parameters,
                                      const std::string& file, const std::string& error_kind) {
  auto fail = [&](const std::string& message) {
    return Error(ErrorClass::BadInput, error_kind, message, file, module);
  };
  const auto shape = logical_weight_shape(parameters, WeightLayout::PackQuantized);
  if (!shape || !parameters.count("weight_scale"))
    throw fail("pack-quantized module without a readable weight_shape and weight_scale");
  const std::uint64_t in_features = (*shape)[1];
  const auto& packed = *parameters.at("weight_packed").info;
  const auto& scales = *parameters.at("weight_scale").info;
  IntegerOptions options;
  options.bits = packed_width(in_features, packed.shape[1]);
  if (options.bits == 0) throw fail("pack-quantized codes of no 2..8-bit width");
  options.symmetric = parameters.count("weight_zero_point") == 0;
  const std::uint64_t groups = scales.shape.size() == 2 ? scales.shape[1] : 0;
  if (groups == 0 || in_features % groups != 0)
    throw fail(fmt::format("{} scale columns do not divide {} inputs", groups, in_features));
  options.group_size =
      groups == 1 ? kChannelGroup : static_cast<std::int64_t>(in_features / groups);
  return options;
}

QuantizationDetection detect_quantization(const Checkpoint& checkpoint) {
  QuantizationDetection detection;
  const DeclaredPackBits declared_bits(checkpoint.config());
  for (const auto& [module, parameters] : modules_of(checkpoint)) {
    if (!has(parameters, "weight") && !has(parameters, "weight_packed")) continue;
    WeightLayout layout = classify_module(parameters);
    auto& count = detection.layouts[layout == WeightLayout::PackQuantized
                                        ? pack_quantized_label(parameters, declared_bits(module))
                                        : weight_layout_name(layout)];
    ++count.modules;
    for (const auto& [parameter, location] : parameters) count.bytes += location.info->byte_size();
  }

  std::vector<std::string> quantized;
  for (const auto& [label, count] : detection.layouts)
    if (label != weight_layout_name(WeightLayout::Dense)) quantized.push_back(label);
  detection.summary = quantized.empty()      ? "none"
                      : quantized.size() > 1 ? "mixed"
                                             : quantized.front();
  detection.declared = declared_quantization(checkpoint);
  return detection;
}

}  // namespace qs
