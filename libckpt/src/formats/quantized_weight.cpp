#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/formats/fp8_block_format.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "qs/ckpt/io/checked_tensor.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/packed_int32.h"

namespace qs {
namespace {

const TensorLocation& required(const std::string& module, const ModuleParameters& parameters,
                               const std::string& name, const std::string& kind) {
  const auto found = parameters.find(name);
  if (found == parameters.end())
    throw_bad_input(kind, fmt::format("quantized module without its {}", name), {},
                    module + "." + name);
  return found->second;
}

[[noreturn]] void fail(const TensorLocation& location, const std::string& kind,
                       const std::string& message) {
  throw_bad_input(kind, message, location.shard->path().string(), location.info->name);
}

QuantizedWeight nvfp4_weight(const std::string& module, const ModuleParameters& parameters,
                             WeightLayout layout, const std::string& kind) {
  const bool modelopt = layout == WeightLayout::Nvfp4Modelopt;
  const auto& codes = required(module, parameters, modelopt ? "weight" : "weight_packed", kind);
  const auto& scales = required(module, parameters, "weight_scale", kind);
  const auto& global =
      required(module, parameters, modelopt ? "weight_scale_2" : "weight_global_scale", kind);
  expect_dtype(codes, {DType::U8}, "NVFP4 code tensor", kind);
  expect_dtype(scales, {DType::F8_E4M3}, "NVFP4 block scale tensor", kind);
  const Shape& shape = codes.info->shape;
  if (shape.size() != 2 || shape[0] == 0 || shape[1] == 0 || shape[1] % 8 != 0)
    fail(codes, kind,
         fmt::format("shape {}, but NVFP4 codes are [N, K/2] with N > 0 and K a positive "
                     "multiple of 16",
                     shape_to_string(shape)));
  QuantizedWeight weight;
  weight.request.layout = layout;
  weight.request.rows = shape[0];
  weight.request.cols = shape[1] * 2;
  expect_shape(scales, Shape{shape[0], shape[1] / 8}, "block scale tensor (one per 16 inputs)",
               kind);
  expect_dtype(global, {DType::F32}, "NVFP4 global scale", kind);
  if (!is_scalar_shape(global.info->shape) || global.info->byte_size() != sizeof(float))
    fail(global, kind,
         fmt::format("shape {}, but an NVFP4 global scale is one F32 value ([] or [1])",
                     shape_to_string(global.info->shape)));
  weight.sources = {codes, scales, global};
  return weight;
}

// The width whose ⌊32/b⌋-per-word packing of `cols` values gives `words`, common widths first
// (a narrow K fits several); 0 when none does.
int inferred_width(std::uint64_t cols, std::uint64_t words) {
  for (int bits : {4, 8, 2, 3, 5, 6})
    if (packed_words(cols, bits) == words) return bits;
  return 0;
}

QuantizedWeight pack_quantized_weight(const std::string& module, const ModuleParameters& parameters,
                                      int declared_bits, const std::string& kind) {
  const auto& packed = required(module, parameters, "weight_packed", kind);
  const auto& scales = required(module, parameters, "weight_scale", kind);
  const auto& shape_tensor = required(module, parameters, "weight_shape", kind);
  expect_dtype(packed, {DType::I32}, "pack-quantized code tensor", kind);
  expect_dtype(scales, {DType::BF16, DType::F16, DType::F32}, "pack-quantized scale tensor", kind);
  const auto [rows, cols] = read_weight_shape(shape_tensor, kind);
  const Shape& words = packed.info->shape;
  if (words.size() != 2 || words[0] != rows)
    fail(packed, kind,
         fmt::format("shape {}, but weight_shape says [{}, {}]: codes are [{}, words per row]",
                     shape_to_string(words), rows, cols, rows));
  if (declared_bits != 0 && (declared_bits < 2 || declared_bits > 8))
    fail(packed, kind,
         fmt::format("declared num_bits {}; pack-quantized holds 2..8", declared_bits));
  const int bits = declared_bits ? declared_bits : inferred_width(cols, words[1]);
  if (bits == 0 || packed_words(cols, bits) != words[1])
    fail(packed, kind,
         bits ? fmt::format("shape {}, but {} {}-bit codes per row need {} words",
                            shape_to_string(words), cols, bits, packed_words(cols, bits))
              : fmt::format("shape {}: no 2..8-bit packing of {} codes per row gives {} words",
                            shape_to_string(words), cols, words[1]));
  const Shape& scale_shape = scales.info->shape;
  if (scale_shape.size() != 2 || scale_shape[0] != rows || scale_shape[1] == 0 ||
      cols % scale_shape[1] != 0)
    fail(scales, kind,
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

// DeepSeek's FP8: F8_E4M3 codes [N, K] and one F32 multiplier per 128 × 128 block, every one
// finite and positive (reads the scales: a NaN or zero scale would decode the whole block to
// garbage without any other sign).
QuantizedWeight fp8_block_weight(const std::string& module, const ModuleParameters& parameters,
                                 const std::string& kind) {
  const auto& codes = required(module, parameters, "weight", kind);
  const auto& scales = required(module, parameters, kFp8ScaleParameter, kind);
  expect_dtype(codes, {DType::F8_E4M3}, "FP8 block-scaled weight", kind);
  const Shape& shape = codes.info->shape;
  if (shape.size() != 2 || shape[0] == 0 || shape[1] == 0)
    fail(codes, kind,
         fmt::format("shape {}, but an FP8 block-scaled weight is [N, K] with N, K > 0",
                     shape_to_string(shape)));
  expect_dtype(scales, {DType::F32}, "FP8 block scale tensor (weight_scale_inv)", kind);
  expect_shape(scales, fp8_block_scale_shape(shape[0], shape[1]),
               "block scale tensor (one per 128 × 128 block of the weight)", kind);
  const auto bytes = scales.shard->read(*scales.info);
  for (std::size_t i = 0; i < bytes.size() / sizeof(float); ++i) {
    float scale = 0.0f;
    std::memcpy(&scale, bytes.data() + i * sizeof(float), sizeof(float));
    if (!(std::isfinite(scale) && scale > 0.0f))
      fail(scales, kind,
           fmt::format("block scale {} (block [{}, {}]) is {}; every scale must be finite and "
                       "positive",
                       i, i / scales.info->shape[1], i % scales.info->shape[1], scale));
  }
  QuantizedWeight weight;
  weight.request.layout = WeightLayout::Fp8Block;
  weight.request.rows = shape[0];
  weight.request.cols = shape[1];
  weight.sources = {codes, scales};
  return weight;
}

}  // namespace

DeclaredPackBits::DeclaredPackBits(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("quantization_config")) return;
  const auto& block = config.at("quantization_config");
  if (!block.is_object() || block.value("quant_method", std::string()) != "compressed-tensors")
    return;
  try {
    config_ = parse_compressed_tensors_config(block);
  } catch (const std::exception&) {  // unreadable: validate's int.config_mismatch reports it
    config_.reset();
  }
}

int DeclaredPackBits::operator()(const std::string& module) const {
  if (!config_) return 0;
  const auto* group = covering_group(*config_, module);
  return group && group->format == "pack-quantized" && group->type == "int" ? group->bits : 0;
}

QuantizedWeight checked_quantized_weight(const std::string& module,
                                         const ModuleParameters& parameters, int declared_bits,
                                         const std::string& kind) {
  const auto layout = classify_module(parameters);
  if (is_nvfp4_layout(layout)) return nvfp4_weight(module, parameters, layout, kind);
  if (layout == WeightLayout::PackQuantized)
    return pack_quantized_weight(module, parameters, declared_bits, kind);
  if (layout == WeightLayout::Fp8Block) return fp8_block_weight(module, parameters, kind);
  throw_bad_input(kind,
                  fmt::format("stored as {}, which is neither NVFP4, pack-quantized nor FP8 "
                              "block-scaled",
                              weight_layout_name(layout)),
                  {}, module);
}

}  // namespace qs
