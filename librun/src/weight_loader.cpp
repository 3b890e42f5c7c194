#include "qs/run/weight_loader.h"

#include <fmt/format.h>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/weight_format.h"
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

}  // namespace

Matrix WeightLoader::linear(const std::string& module) const {
  if (overrides_)
    if (auto matrix = overrides_->linear(module)) {
      matrix->device = device_;
      return std::move(*matrix);
    }
  // Every parameter any registered format stores a weight in, so the registry sees what
  // the checkpoint holds for this Linear.
  ModuleParameters parameters;
  for (const auto& name : weight_parameter_names())
    if (const auto location = checkpoint_.find(module + "." + name))
      parameters.emplace(name, *location);
  parameters = vq_.with_codebook(checkpoint_, module, parameters, "run.bad_quantized_weight");
  const auto& format = detect_weight_format(parameters);
  if (format.decodable()) {
    const auto weight =
        format.check(module, parameters, declared_bits_(module), "run.bad_quantized_weight");
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
  if (format.layout == WeightLayout::Dense && found->second.info->shape.size() == 2 &&
      is_float(found->second.info->dtype)) {
    const auto& weight = found->second;
    return {module, device_, weight.info->shape[0], weight.info->shape[1], decode(weight)};
  }
  if (found != parameters.end() || code_tensor(parameters))
    throw_bad_input("run.bad_quantized_weight",
                    fmt::format("Linear {} is stored as {} ({}), which the runner cannot load",
                                module, format.name,
                                found != parameters.end()
                                    ? fmt::format("{} {}", dtype_name(found->second.info->dtype),
                                                  shape_to_string(found->second.info->shape))
                                    : code_tensor(parameters)->info->name),
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
