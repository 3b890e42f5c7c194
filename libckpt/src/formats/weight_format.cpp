#include "qs/ckpt/formats/weight_format.h"

#include <fmt/format.h>

#include <algorithm>

#include "qs/ckpt/core/error.h"
#include "weight_format_descriptors.h"

namespace qs {
namespace formats {

std::optional<Shape> stored_weight_shape(const ModuleParameters& parameters) {
  if (const auto* weight = two_dimensional(parameters, "weight")) return weight->shape;
  return std::nullopt;
}

const TensorLocation& required_parameter(const std::string& module,
                                         const ModuleParameters& parameters,
                                         const std::string& name, const std::string& kind) {
  const auto found = parameters.find(name);
  if (found == parameters.end())  // the file that holds the rest of the module
    throw_bad_input(
        kind, fmt::format("quantized module without its {}", name),
        parameters.empty() ? std::string() : parameters.begin()->second.shard->path().string(),
        module + "." + name);
  return found->second;
}

void fail_tensor(const TensorLocation& location, const std::string& kind,
                 const std::string& message) {
  throw_bad_input(kind, message, location.shard->path().string(), location.info->name);
}

}  // namespace formats

namespace {

// The registry: every stored weight format, most specific first (detection takes the first
// whose `detect` holds). One line per format.
std::span<const WeightFormat* const> registry() {
  static const WeightFormat* const table[] = {
      &formats::nvfp4_modelopt_format(),
      &formats::nvfp4_compressed_tensors_format(),
      &formats::pack_quantized_format(),
      &formats::int8_format(),
      &formats::fp8_block_format(),
      &formats::vq_format(),
      &formats::fp8_format(),
      &formats::dense_format(),
  };
  return table;
}

const WeightFormat& unrecognized_format() {
  static const WeightFormat format{.layout = WeightLayout::Unrecognized, .name = "unrecognized"};
  return format;
}

}  // namespace

std::vector<std::string> WeightFormat::parameter_names(bool with_optional) const {
  auto names = parameters;
  if (with_optional && !optional_parameter.empty()) names.push_back(optional_parameter);
  return names;
}

bool WeightFormat::stores(const std::string& parameter) const {
  return parameter == optional_parameter ||
         std::find(parameters.begin(), parameters.end(), parameter) != parameters.end();
}

std::span<const WeightFormat* const> weight_formats() { return registry(); }

const WeightFormat& weight_format(WeightLayout layout) {
  for (const auto* format : registry())
    if (format->layout == layout) return *format;
  return unrecognized_format();
}

const WeightFormat& detect_weight_format(const ModuleParameters& parameters) {
  for (const auto* format : registry())
    if (format->detect(parameters)) return *format;
  return unrecognized_format();
}

const WeightFormat& weight_format_for(CodeFamily codes, OutputFormat format) {
  const ConfigGroup config =
      format == OutputFormat::Modelopt ? ConfigGroup::Modelopt : ConfigGroup::CompressedTensors;
  for (const auto* candidate : registry())
    if (candidate->codes == codes && candidate->config == config) return *candidate;
  throw Error(ErrorClass::Internal, "format.unregistered",
              fmt::format("no registered weight format stores these codes in {}",
                          output_format_name(format)));
}

std::vector<TensorSpec> nvfp4_output_specs(const std::string& module, std::uint64_t rows,
                                           std::uint64_t cols, OutputFormat format,
                                           bool activations) {
  return weight_format_for(CodeFamily::Nvfp4, format)
      .output_specs(module, rows, cols, {.activations = activations});
}

const TensorLocation* code_tensor(const ModuleParameters& parameters) {
  for (const auto* format : registry())
    if (const auto found = parameters.find(format->parameters.front()); found != parameters.end())
      return &found->second;
  return nullptr;
}

const std::vector<std::string>& weight_parameter_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (const auto* format : registry())
      for (const auto& name : format->parameter_names(true))
        if (std::find(all.begin(), all.end(), name) == all.end()) all.push_back(name);
    return all;
  }();
  return names;
}

}  // namespace qs
