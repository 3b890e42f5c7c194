// NVFP4 in its two stored layouts (docs/formats/modelopt-nvfp4.md, "Checkpoint tensors";
// docs/formats/compressed-tensors.md, "nvfp4-pack-quantized"): the same E2M1 codes, two per
// byte, and E4M3 scales per 16 inputs, under different names, with the per-tensor scale stored
// as the decode multiplier (modelopt) or its reciprocal (compressed-tensors).
#include <fmt/format.h>

#include "qs/ckpt/io/checked_tensor.h"
#include "weight_format_descriptors.h"

namespace qs::formats {
namespace {

constexpr std::uint64_t kBlockSize = 16;  // inputs per E4M3 block scale

std::optional<Shape> nvfp4_shape(const ModuleParameters& parameters, const std::string& codes) {
  const auto* stored = two_dimensional(parameters, codes);
  if (!stored) return std::nullopt;
  return Shape{stored->shape[0], stored->shape[1] * 2};
}

// modelopt writes its per-tensor scales as 0-dimensional tensors, compressed-tensors as [1].
std::vector<TensorSpec> nvfp4_specs(const WeightFormat& format, const std::string& module,
                                    std::uint64_t rows, std::uint64_t cols, bool activations) {
  const Shape scalar = format.scale_convention == ScaleConvention::Multiplier ? Shape{} : Shape{1};
  std::vector<TensorSpec> specs = {
      {module + "." + format.parameters[0], DType::U8, {rows, cols / 2}},
      {module + "." + format.parameters[1], DType::F8_E4M3, {rows, cols / kBlockSize}},
      {module + "." + format.parameters[2], DType::F32, scalar},
  };
  if (activations) specs.push_back({module + "." + format.optional_parameter, DType::F32, scalar});
  return specs;
}

QuantizedWeight nvfp4_check(const WeightFormat& format, const std::string& module,
                            const ModuleParameters& parameters, const std::string& kind) {
  const auto& codes = required_parameter(module, parameters, format.parameters[0], kind);
  const auto& scales = required_parameter(module, parameters, format.parameters[1], kind);
  const auto& global = required_parameter(module, parameters, format.parameters[2], kind);
  expect_dtype(codes, {DType::U8}, "NVFP4 code tensor", kind);
  expect_dtype(scales, {DType::F8_E4M3}, "NVFP4 block scale tensor", kind);
  const Shape& shape = codes.info->shape;
  if (shape.size() != 2 || shape[0] == 0 || shape[1] == 0 || shape[1] % 8 != 0)
    fail_tensor(codes, kind,
                fmt::format("shape {}, but NVFP4 codes are [N, K/2] with N > 0 and K a positive "
                            "multiple of 16",
                            shape_to_string(shape)));
  QuantizedWeight weight;
  weight.request.layout = format.layout;
  weight.request.rows = shape[0];
  weight.request.cols = shape[1] * 2;
  expect_shape(scales, Shape{shape[0], shape[1] / 8}, "block scale tensor (one per 16 inputs)",
               kind);
  expect_dtype(global, {DType::F32}, "NVFP4 global scale", kind);
  if (!is_scalar_shape(global.info->shape) || global.info->byte_size() != sizeof(float))
    fail_tensor(global, kind,
                fmt::format("shape {}, but an NVFP4 global scale is one F32 value ([] or [1])",
                            shape_to_string(global.info->shape)));
  weight.sources = {codes, scales, global};
  return weight;
}

}  // namespace

const WeightFormat& nvfp4_modelopt_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Nvfp4Modelopt,
      .name = "nvfp4-modelopt",
      .codes = CodeFamily::Nvfp4,
      .config = ConfigGroup::Modelopt,
      .parameters = {"weight", "weight_scale", "weight_scale_2"},
      .optional_parameter = "input_scale",
      .global_scale = "weight_scale_2",
      .scale_convention = ScaleConvention::Multiplier,
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight", DType::U8) && has(p, "weight_scale", DType::F8_E4M3) &&
                   has(p, "weight_scale_2");
          },
      .logical_shape = [](const ModuleParameters& p) { return nvfp4_shape(p, "weight"); },
      .output_specs =
          [](const std::string& module, std::uint64_t rows, std::uint64_t cols,
             const WeightEncoding& encoding) {
            return nvfp4_specs(nvfp4_modelopt_format(), module, rows, cols, encoding.activations);
          },
      .check =
          [](const std::string& module, const ModuleParameters& parameters, int,
             const std::string& kind) {
            return nvfp4_check(nvfp4_modelopt_format(), module, parameters, kind);
          },
  };
  return format;
}

const WeightFormat& nvfp4_compressed_tensors_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Nvfp4CompressedTensors,
      .name = "nvfp4-compressed-tensors",
      .codes = CodeFamily::Nvfp4,
      .config = ConfigGroup::CompressedTensors,
      .parameters = {"weight_packed", "weight_scale", "weight_global_scale"},
      .optional_parameter = "input_global_scale",
      .global_scale = "weight_global_scale",
      .scale_convention = ScaleConvention::Reciprocal,
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight_packed", DType::U8) && has(p, "weight_global_scale");
          },
      .logical_shape = [](const ModuleParameters& p) { return nvfp4_shape(p, "weight_packed"); },
      .output_specs =
          [](const std::string& module, std::uint64_t rows, std::uint64_t cols,
             const WeightEncoding& encoding) {
            return nvfp4_specs(nvfp4_compressed_tensors_format(), module, rows, cols,
                               encoding.activations);
          },
      .check =
          [](const std::string& module, const ModuleParameters& parameters, int,
             const std::string& kind) {
            return nvfp4_check(nvfp4_compressed_tensors_format(), module, parameters, kind);
          },
  };
  return format;
}

}  // namespace qs::formats
