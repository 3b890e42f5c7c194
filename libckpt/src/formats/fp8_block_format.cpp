#include "qs/ckpt/formats/fp8_block_format.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"

namespace qs {

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
