#include "qs/pipeline/quantized_layer_weights.h"

#include "qs/ckpt/core/error.h"
#include "qs/pipeline/layer_statistics_board.h"  // module_layer
#include "qs/ckpt/formats/weight_format.h"
#include "qs/quant/dequantize_transform.h"

namespace qs::pipeline {
namespace {

std::string module_of(const std::string& tensor) { return tensor.substr(0, tensor.rfind('.')); }

ModuleParameters parameters_of(const std::string& module, const std::vector<TensorInfo>& tensors) {
  ModuleParameters parameters;
  for (const auto& info : tensors)
    parameters.emplace(info.name.substr(module.size() + 1), TensorLocation{nullptr, &info});
  return parameters;
}

}  // namespace

QuantizedLayerWeights::QuantizedLayerWeights(std::map<std::string, int> pack_bits)
    : pack_bits_(std::move(pack_bits)) {}

void QuantizedLayerWeights::add(std::span<const TensorSpec> specs,
                                std::span<const std::span<const std::byte>> bytes,
                                const std::map<std::string, Shape>& shapes) {
  std::map<std::string, Module> added;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::string module = module_of(specs[i].name);
    const auto shape = shapes.find(module);
    if (shape == shapes.end()) continue;
    Module& entry = added[module];
    entry.shape = shape->second;
    entry.tensors.push_back({specs[i].name, specs[i].dtype, specs[i].shape, 0, bytes[i].size()});
    entry.bytes.emplace_back(bytes[i].begin(), bytes[i].end());
  }
  std::lock_guard lock(mutex_);
  for (auto& [module, entry] : added)
    if (detect_weight_format(parameters_of(module, entry.tensors)).decodable())
      modules_[module] = std::move(entry);
}

std::optional<run::Matrix> QuantizedLayerWeights::linear(const std::string& module) const {
  const Module* entry = nullptr;
  {
    std::lock_guard lock(mutex_);
    const auto found = modules_.find(module);
    if (found == modules_.end()) return std::nullopt;
    entry = &found->second;  // stays until clear(), which the driver calls after the re-run
  }
  const auto parameters = parameters_of(module, entry->tensors);
  const WeightFormat& format = detect_weight_format(parameters);
  DequantizeRequest request;
  request.layout = format.layout;
  request.rows = entry->shape[0];
  request.cols = entry->shape[1];
  if (format.layout == WeightLayout::PackQuantized) {
    const auto bits = pack_bits_.find(module);
    if (bits == pack_bits_.end())
      throw Error(ErrorClass::Internal, "pipeline.pack_bits", "no code width for the module", {},
                  module);
    request.bits = bits->second;
    request.groups = parameters.at("weight_scale").info->shape[1];
  }
  std::vector<SourceTensor> sources;
  for (const auto& name : format.parameter_names(true)) {
    const auto found = parameters.find(name);
    if (found == parameters.end()) continue;
    const std::size_t index = static_cast<std::size_t>(found->second.info - entry->tensors.data());
    sources.push_back({found->second.info, entry->bytes[index]});
  }
  run::Matrix matrix{module, run::GemmDevice::Cpu, request.rows, request.cols, {}};
  matrix.values.resize(request.rows * request.cols);
  dequantize_weight(request, sources, matrix.values);
  return matrix;
}

void QuantizedLayerWeights::clear(std::uint32_t layer) {
  std::lock_guard lock(mutex_);
  std::erase_if(modules_, [&](const auto& entry) { return module_layer(entry.first) == layer; });
}

std::uint64_t QuantizedLayerWeights::held_bytes() const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& [module, entry] : modules_)
    for (const auto& bytes : entry.bytes) total += bytes.size();
  return total;
}

}  // namespace qs::pipeline
