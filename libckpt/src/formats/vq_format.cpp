// Vector-quantized Linears (docs/formats/vq.md): per module I32 `vq_codes` (each row's codeword
// indices as one LSB-first bit stream in 32-bit words) and `vq_scales` (one per row and 128
// inputs, in the weight's dtype); the codebook [K, d] is a tensor shared by every module of a
// tier, which config.json names per module and readers attach as kVqCodebookParameter.
#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checked_tensor.h"
#include "weight_format_descriptors.h"

namespace qs::formats {
namespace {

// [rows, 128 · groups]: the scales say both (the codes' width depends on the tier).
std::optional<Shape> vq_shape(const ModuleParameters& parameters) {
  const auto* scales = two_dimensional(parameters, "vq_scales");
  if (!scales || scales->shape[1] == 0) return std::nullopt;
  return Shape{scales->shape[0], scales->shape[1] * kVqScaleGroup};
}

std::vector<TensorSpec> vq_specs(const std::string& module, std::uint64_t rows,
                                 std::uint64_t cols, const WeightEncoding& encoding) {
  if (!encoding.vq_tier)
    throw Error(ErrorClass::Internal, "format.vq_tier", "a VQ module's specs need its tier");
  return {
      {module + ".vq_codes", DType::I32, {rows, encoding.vq_tier->packed_words_per_row(cols)}},
      {module + ".vq_scales", encoding.source_dtype, {rows, cols / kVqScaleGroup}},
  };
}

// The codebook's [K, d] gives the tier's numbers (whether they are the tier the config names
// is checked where the codebook is attached, vq_declaration.cpp).
QuantizedWeight vq_check(const std::string& module, const ModuleParameters& parameters,
                         int /*declared_bits*/, const std::string& kind) {
  const auto& codes = required_parameter(module, parameters, "vq_codes", kind);
  const auto& scales = required_parameter(module, parameters, "vq_scales", kind);
  const auto codebook = parameters.find(kVqCodebookParameter);
  if (codebook == parameters.end())
    fail_tensor(codes, kind,
                "a VQ module without a codebook: config.json's quantization_config.vq.modules "
                "does not declare this module");
  expect_dtype(codes, {DType::I32}, "VQ code tensor", kind);
  expect_dtype(scales, {DType::BF16, DType::F16, DType::F32}, "VQ scale tensor", kind);
  expect_dtype(codebook->second, {DType::F16, DType::BF16}, "VQ codebook", kind);
  const Shape& book = codebook->second.info->shape;
  if (book.size() != 2 || book[0] < 2 || book[1] == 0 || kVqScaleGroup % book[1] != 0)
    fail_tensor(codebook->second, kind,
                fmt::format("shape {}, but a codebook is [K, d] with K ≥ 2 and d dividing {}",
                            shape_to_string(book), kVqScaleGroup));
  VqTier tier;
  tier.k = static_cast<std::uint32_t>(book[0]);
  tier.d = static_cast<std::uint32_t>(book[1]);
  tier.kind = tier.d == 1 ? VqCodebookKind::Uniform : VqCodebookKind::Learned;
  tier.name = fmt::format("d{}k{}", tier.d, tier.k);
  const Shape& scale_shape = scales.info->shape;
  if (scale_shape.size() != 2 || scale_shape[0] == 0 || scale_shape[1] == 0)
    fail_tensor(scales, kind,
                fmt::format("shape {}, but scales are [rows, inputs / {}] with both above 0",
                            shape_to_string(scale_shape), kVqScaleGroup));
  const std::uint64_t rows = scale_shape[0];
  const std::uint64_t cols = scale_shape[1] * kVqScaleGroup;
  expect_shape(codes, Shape{rows, tier.packed_words_per_row(cols)},
               fmt::format("code tensor ({} rows of {} {}-bit indices, d {}, K {}, in 32-bit "
                           "words)",
                           rows, cols / tier.d, tier.index_bits(), tier.d, tier.k),
               kind);
  QuantizedWeight weight;
  weight.request.layout = WeightLayout::Vq;
  weight.request.rows = rows;
  weight.request.cols = cols;
  weight.request.bits = static_cast<int>(tier.index_bits());
  weight.request.groups = scale_shape[1];
  weight.request.vq_tier = tier;
  weight.sources = {codes, scales, codebook->second};
  return weight;
}

}  // namespace

const WeightFormat& vq_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Vq,
      .name = "vq",
      .codes = CodeFamily::Vq,
      .config = ConfigGroup::Vq,
      .parameters = {"vq_codes", "vq_scales"},
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "vq_codes", DType::I32) && has(p, "vq_scales");
          },
      .logical_shape = vq_shape,
      .output_specs = vq_specs,
      .check = vq_check,
  };
  return format;
}

}  // namespace qs::formats
