// FP8 block-scaled Linears, DeepSeek-V3's layout (docs/formats/fp8-block.md): the registry's
// descriptor and the config facts.
#include "qs/ckpt/formats/fp8_block_format.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checked_tensor.h"
#include "weight_format_descriptors.h"

namespace qs {
namespace formats {
namespace {

// F8_E4M3 codes [N, K] and one F32 multiplier per 128 × 128 block, every one finite and
// positive: the scales are read (4 bytes per 16384 weights), since a NaN or zero scale decodes
// its whole block to garbage without any other sign.
QuantizedWeight fp8_block_check(const std::string& module, const ModuleParameters& parameters,
                                int /*declared_bits*/, const std::string& kind) {
  const auto& codes = required_parameter(module, parameters, "weight", kind);
  const auto& scales = required_parameter(module, parameters, kFp8ScaleParameter, kind);
  expect_dtype(codes, {DType::F8_E4M3}, "FP8 block-scaled weight", kind);
  const Shape& shape = codes.info->shape;
  if (shape.size() != 2 || shape[0] == 0 || shape[1] == 0)
    fail_tensor(codes, kind,
                fmt::format("shape {}, but an FP8 block-scaled weight is [N, K] with N, K > 0",
                            shape_to_string(shape)));
  expect_dtype(scales, {DType::F32}, "FP8 block scale tensor (weight_scale_inv)", kind);
  expect_shape(scales, fp8_block_scale_shape(shape[0], shape[1]),
               "block scale tensor (one per 128 × 128 block of the weight)", kind);
  const auto bytes = scales.shard->read(*scales.info);
  const std::uint64_t columns = scales.info->shape[1];
  for (std::size_t i = 0; i < bytes.size() / sizeof(float); ++i) {
    float scale = 0.0f;
    std::memcpy(&scale, bytes.data() + i * sizeof(float), sizeof(float));
    if (!(std::isfinite(scale) && scale > 0.0f))
      fail_tensor(scales, kind,
                  fmt::format("the scale of block [{}, {}] is {}; every scale must be finite "
                              "and positive",
                              i / columns, i % columns, scale));
  }
  QuantizedWeight weight;
  weight.request.layout = WeightLayout::Fp8Block;
  weight.request.rows = shape[0];
  weight.request.cols = shape[1];
  weight.sources = {codes, scales};
  return weight;
}

}  // namespace

const WeightFormat& fp8_block_format() {
  static const WeightFormat format{
      .layout = WeightLayout::Fp8Block,
      .name = "fp8-block",
      .codes = CodeFamily::Fp8Block,
      .config = ConfigGroup::Fp8,
      .parameters = {"weight", kFp8ScaleParameter},
      .detect =
          [](const ModuleParameters& p) {
            return has(p, "weight", DType::F8_E4M3) && has(p, kFp8ScaleParameter);
          },
      .logical_shape = stored_weight_shape,
      .output_specs =
          [](const std::string& module, std::uint64_t rows, std::uint64_t cols,
             const WeightEncoding&) { return fp8_block_output_specs(module, rows, cols); },
      .check = fp8_block_check,
  };
  return format;
}

}  // namespace formats

Shape fp8_block_scale_shape(std::uint64_t rows, std::uint64_t cols) {
  return {(rows + kFp8BlockRows - 1) / kFp8BlockRows, (cols + kFp8BlockCols - 1) / kFp8BlockCols};
}

std::vector<TensorSpec> fp8_block_output_specs(const std::string& module, std::uint64_t rows,
                                               std::uint64_t cols) {
  return {
      {module + ".weight", DType::F8_E4M3, {rows, cols}},
      {module + "." + kFp8ScaleParameter, DType::F32, fp8_block_scale_shape(rows, cols)},
  };
}

nlohmann::json fp8_block_config_block(const std::vector<std::string>& unquantized) {
  nlohmann::json block = {
      {"quant_method", "fp8"},
      {"activation_scheme", "dynamic"},
      {"fmt", "e4m3"},
      {"weight_block_size", {kFp8BlockRows, kFp8BlockCols}},
  };
  if (!unquantized.empty()) {
    block["ignored_layers"] = unquantized;
    block["modules_to_not_convert"] = unquantized;
  }
  return block;
}

bool declares_fp8(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("quantization_config")) return false;
  const auto& block = config.at("quantization_config");
  return block.is_object() && block.contains("quant_method") &&
         block.at("quant_method").is_string() && block.at("quant_method") == "fp8";
}

void require_supported_fp8_config(const nlohmann::json& config, const std::string& config_file) {
  if (!declares_fp8(config))
    throw_bad_input("fp8.block_size",
                    "the checkpoint holds FP8 block-scaled weights (weight_scale_inv), but "
                    "config.json declares no quantization_config with quant_method fp8",
                    config_file);
  const auto& block = config.at("quantization_config");
  const nlohmann::json expected = {kFp8BlockRows, kFp8BlockCols};
  if (!block.contains("weight_block_size") || block.at("weight_block_size") != expected)
    throw_bad_input(
        "fp8.block_size",
        fmt::format("quantization_config.weight_block_size is {}; FP8 block-scaled weights are "
                    "read with [128, 128] blocks only",
                    block.contains("weight_block_size") ? block.at("weight_block_size").dump()
                                                        : std::string("absent")),
        config_file);
}

}  // namespace qs
