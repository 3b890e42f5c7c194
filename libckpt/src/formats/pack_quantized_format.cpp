// compressed-tensors pack-quantized INT2..8 (docs/formats/compressed-tensors.md,
// "pack-quantized"): b-bit codes packed into int32 words along each row, scales per group of
// inputs, the logical shape in an I64 weight_shape, and for asymmetric schemes zero points
// packed along the output dimension.
#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/packed_int32.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/io/checked_tensor.h"
#include "weight_format_descriptors.h"

namespace qs::formats {
namespace {

// The width of codes stored as `words` int32 words per row of `cols` values, 0 when none fits.
// Common widths first: with padding to whole words a narrow K fits several, and 7-bit codes
// always pack like 8-bit ones (four per word), so only a config can say 7.
int packed_width(std::uint64_t cols, std::uint64_t words) {
  for (int bits : {4, 8, 2, 3, 5, 6})
    if (packed_words(cols, bits) == words) return bits;
  return 0;
}

std::optional<Shape> pack_quantized_shape(const ModuleParameters& parameters) {
  const auto* packed = two_dimensional(parameters, "weight_packed");
  const auto shape_tensor = parameters.find("weight_shape");
  if (!packed || shape_tensor == parameters.end()) return std::nullopt;
  try {  // the one reader of weight_shape (I64 [2], positive), as validate checks it
    const auto [rows, cols] = read_weight_shape(shape_tensor->second, "layout.weight_shape");
    if (rows != packed->shape[0]) return std::nullopt;
    return Shape{rows, cols};
  } catch (const Error&) {
    return std::nullopt;
  }
}

// "pack-quantized-int4". The config's num_bits (`declared_bits`, 0 when none) wins where the
// packing fits it: only it can say 7.
std::string pack_quantized_label(const ModuleParameters& parameters, int declared_bits) {
  const std::string base = pack_quantized_format().name;
  const auto shape = pack_quantized_shape(parameters);
  if (!shape) return base;
  const auto words = parameters.at("weight_packed").info->shape[1];
  const bool declared_fits =
      declared_bits >= 2 && declared_bits <= 8 && packed_words((*shape)[1], declared_bits) == words;
  const int bits = declared_fits ? declared_bits : packed_width((*shape)[1], words);
  return bits ? base + "-int" + std::to_string(bits) : base;
}

std::vector<TensorSpec> pack_quantized_specs(const std::string& module, std::uint64_t rows,
                                             std::uint64_t cols, const WeightEncoding& encoding) {
  const auto& options = encoding.integer;
  const int bits = options.bits;
  const std::uint64_t groups = options.group_size == kChannelGroup
                                   ? 1
                                   : cols / static_cast<std::uint64_t>(options.group_size);
  std::vector<TensorSpec> specs = {
      {module + ".weight_packed", DType::I32, {rows, packed_words(cols, bits)}},
      {module + ".weight_scale", encoding.source_dtype, {rows, groups}},
      {module + ".weight_shape", DType::I64, {2}},
  };
  if (!options.symmetric)
    specs.push_back(
        {module + ".weight_zero_point", DType::I32, {packed_words(rows, bits), groups}});
  return specs;
}

QuantizedWeight pack_quantized_check(const std::string& module, const ModuleParameters& parameters,
                                     int declared_bits, const std::string& kind) {
  const auto& packed = required_parameter(module, parameters, "weight_packed", kind);
  const auto& scales = required_parameter(module, parameters, "weight_scale", kind);
  const auto& shape_tensor = required_parameter(module, parameters, "weight_shape", kind);
  expect_dtype(packed, {DType::I32}, "pack-quantized code tensor", kind);
  expect_dtype(scales, {DType::BF16, DType::F16, DType::F32}, "pack-quantized scale tensor", kind);
  const auto [rows, cols] = read_weight_shape(shape_tensor, kind);
  const Shape& words = packed.info->shape;
  if (words.size() != 2 || words[0] != rows)
    fail_tensor(packed, kind,
                fmt::format("shape {}, but weight_shape says [{}, {}]: codes are [{}, words per "
                            "row]",
                            shape_to_string(words), rows, cols, rows));
  if (declared_bits != 0 && (declared_bits < 2 || declared_bits > 8))
    fail_tensor(packed, kind,
                fmt::format("declared num_bits {}; pack-quantized holds 2..8", declared_bits));
  const int bits = declared_bits ? declared_bits : packed_width(cols, words[1]);
  if (bits == 0 || packed_words(cols, bits) != words[1])
    fail_tensor(packed, kind,
                bits ? fmt::format("shape {}, but {} {}-bit codes per row need {} words",
                                   shape_to_string(words), cols, bits, packed_words(cols, bits))
                     : fmt::format("shape {}: no 2..8-bit packing of {} codes per row gives {} "
                                   "words",
                                   shape_to_string(words), cols, words[1]));
  const Shape& scale_shape = scales.info->shape;
  if (scale_shape.size() != 2 || scale_shape[0] != rows || scale_shape[1] == 0 ||
      cols % scale_shape[1] != 0)
    fail_tensor(scales, kind,
                fmt::format("shape {}, but scales are [{}, G] with G dividing {}",
                            shape_to_string(scale_shape), rows, cols));
  QuantizedWeight weight;
  weight.request = {WeightLayout::PackQuantized, rows, cols, bits, scale_shape[1]};
  weight.sources = {packed, scales, shape_tensor};
  if (const auto zeros = parameters.find("weight_zero_point"); zeros != parameters.end()) {
    expect_dtype(zeros->second, {DType::I32}, "pack-quantized zero point tensor", kind);
    expect_shape(zeros->second, Shape{packed_words(rows, bits), scale_shape[1]},
                 fmt::format("zero point tensor ({} {}-bit values per group, packed along the "
                             "output dimension)",
                             rows, bits),
                 kind);
    weight.sources.push_back(zeros->second);
  }
  return weight;
}

}  // namespace

const WeightFormat& pack_quantized_format() {
  static const WeightFormat format{
      .layout = WeightLayout::PackQuantized,
      .name = "pack-quantized",
      .codes = CodeFamily::PackedInteger,
      .config = ConfigGroup::CompressedTensors,
      .parameters = {"weight_packed", "weight_scale", "weight_shape"},
      .optional_parameter = "weight_zero_point",
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight_packed", DType::I32) && has(p, "weight_scale");
          },
      .logical_shape = pack_quantized_shape,
      .label = pack_quantized_label,
      .output_specs = pack_quantized_specs,
      .check = pack_quantized_check,
  };
  return format;
}

}  // namespace qs::formats

namespace qs {

IntegerOptions pack_quantized_options(const std::string& module, const ModuleParameters& parameters,
                                      const std::string& file, const std::string& error_kind) {
  auto fail = [&](const std::string& message) {
    return Error(ErrorClass::BadInput, error_kind, message, file, module);
  };
  const auto shape = formats::pack_quantized_shape(parameters);
  if (!shape || !parameters.count("weight_scale"))
    throw fail("pack-quantized module without a readable weight_shape and weight_scale");
  const std::uint64_t in_features = (*shape)[1];
  const auto& packed = *parameters.at("weight_packed").info;
  const auto& scales = *parameters.at("weight_scale").info;
  IntegerOptions options;
  options.bits = formats::packed_width(in_features, packed.shape[1]);
  if (options.bits == 0) throw fail("pack-quantized codes of no 2..8-bit width");
  options.symmetric = parameters.count("weight_zero_point") == 0;
  const std::uint64_t groups = scales.shape.size() == 2 ? scales.shape[1] : 0;
  if (groups == 0 || in_features % groups != 0)
    throw fail(fmt::format("{} scale columns do not divide {} inputs", groups, in_features));
  options.group_size =
      groups == 1 ? kChannelGroup : static_cast<std::int64_t>(in_features / groups);
  return options;
}

}  // namespace qs
