#include "qs/run/weight_loader.h"

#include <fmt/format.h>

#include "qs/ckpt/formats/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/quant/dequantize_transform.h"

namespace qs::run {
namespace {

std::vector<float> decode(const TensorLocation& location) {
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

bool is_float(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32;
}

// The parameters a Linear's weight may be stored in, whatever the layout.
constexpr const char* kWeightParameters[] = {
    "weight",       "weight_packed",     "weight_scale", "weight_scale_2", "weight_global_scale",
    "weight_shape", "weight_zero_point", "weight_scale_inv",
};

}  // namespace

Matrix WeightLoader::linear(const std::string& module) const {
  ModuleParameters parameters;
  for (const char* name : kWeightParameters)
    if (const auto location = checkpoint_.find(module + "." + name))
      parameters.emplace(name, *location);
  const auto layout = classify_module(parameters);
  if (is_quantized_layout(layout)) {
    const auto weight = checked_quantized_weight(module, parameters, declared_bits_(module),
                                                 "run.bad_quantized_weight");
    std::vector<std::vector<std::byte>> bytes;
    std::vector<SourceTensor> sources;
    for (const auto& location : weight.sources)
      bytes.push_back(location.shard->read(*location.info));
    for (std::size_t i = 0; i < bytes.size(); ++i)
      sources.push_back({weight.sources[i].info, bytes[i]});
    Matrix matrix{module, device_, weight.request.rows, weight.request.cols, {}};
    matrix.values.resize(matrix.rows * matrix.cols);
    dequantize_weight(weight.request, sources, matrix.values);
    return matrix;
  }
  const auto found = parameters.find("weight");
  if (layout == WeightLayout::Dense && found->second.info->shape.size() == 2 &&
      is_float(found->second.info->dtype)) {
    const auto& weight = found->second;
    return {module, device_, weight.info->shape[0], weight.info->shape[1], decode(weight)};
  }
  if (found != parameters.end() || parameters.count("weight_packed"))
    throw_bad_input("run.bad_quantized_weight",
                    fmt::format("Linear {} is stored as {} ({}), which the runner cannot load",
                                module, weight_layout_name(layout),
                                found != parameters.end()
                                    ? fmt::format("{} {}", dtype_name(found->second.info->dtype),
                                                  shape_to_string(found->second.info->shape))
                                    : std::string("weight_packed")),
                    checkpoint_.directory().string(), module + ".weight");
  throw_bad_input(
      "run.missing_tensor",
      fmt::format("no float, NVFP4 or pack-quantized weight stored for Linear {}", module),
      checkpoint_.directory().string(), module + ".weight");
}

std::vector<float> WeightLoader::vector(const std::string& name) const {
  const auto location = checkpoint_.find(name);
  if (!location)
    throw_bad_input("run.missing_tensor", "the checkpoint lacks this tensor",
                    checkpoint_.directory().string(), name);
  return decode(*location);
}

}  // namespace qs::run
