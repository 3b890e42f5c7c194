// Formats whose codes are one element per weight: plain float, and the two scaled 8-bit
// formats we recognise in other tools' checkpoints but neither write nor decode.
#include "weight_format_descriptors.h"

namespace qs::formats {

const WeightFormat& dense_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Dense,
      .name = "dense",
      .codes = CodeFamily::Float,
      .parameters = {"weight"},
      .detect =
          [](const ModuleParameters& p) {
            const auto weight = p.find("weight");
            return weight != p.end() && is_float_dtype(weight->second.info->dtype) &&
                   !has(p, "weight_scale") && !has(p, "weight_packed");
          },
      .logical_shape = stored_weight_shape,
      .output_specs =
          [](const std::string& module, std::uint64_t rows, std::uint64_t cols,
             const WeightEncoding& encoding) {
            return std::vector<TensorSpec>{
                {module + ".weight", encoding.source_dtype, {rows, cols}}};
          },
  };
  return format;
}

const WeightFormat& int8_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Int8,
      .name = "int8",
      .codes = CodeFamily::Int8,
      .config = ConfigGroup::CompressedTensors,
      .parameters = {"weight", "weight_scale"},
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight", DType::I8) && has(p, "weight_scale");
          },
      .logical_shape = stored_weight_shape,
  };
  return format;
}

const WeightFormat& fp8_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Fp8,
      .name = "fp8",
      .codes = CodeFamily::Fp8,
      .config = ConfigGroup::CompressedTensors,
      .parameters = {"weight", "weight_scale"},
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight", DType::F8_E4M3) && has(p, "weight_scale");
          },
      .logical_shape = stored_weight_shape,
  };
  return format;
}

}  // namespace qs::formats
